"""The ``latent_explorer`` shortcode: where the main post's latent explorer opens.

    {{% latent_explorer %}}

puts a button that opens the explorer (``files/assets/js/latent_explorer.js``,
which loads the decoder exported by ``scripts/export_explorer.py`` only when
pressed) and the script itself into the page. The post stays free of
hand-written HTML; the explorer's record is a dependency of the post.
"""

import os

from nikola.plugin_categories import ShortcodePlugin

RECORD = os.path.join("files", "explorer", "explorer.json")
HTML = """<div id="latent-explorer" class="latent-explorer">
<button type="button" class="btn btn-primary">Open the latent explorer</button>
<noscript><p>The explorer needs JavaScript; the two figures above show the same decoder.</p></noscript>
</div>
<script src="/assets/js/latent_explorer.js"></script>"""


class Plugin(ShortcodePlugin):
    """Shortcode that places the latent explorer."""

    name = "latent_explorer"

    def handler(self, site=None, data=None, lang=None, post=None):
        if not os.path.isfile(RECORD):
            raise FileNotFoundError(f"latent_explorer shortcode: {RECORD} not found; run scripts/export_explorer.py")
        return HTML, [RECORD]

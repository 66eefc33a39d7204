# Nikola configuration for "Beyond the Quickstart".
#
# Settings appear in the order of Nikola's own conf.py template
# (`nikola init`); anything not set here keeps Nikola's default.
# The site must work offline: no CDN, no web fonts, no comments, no analytics.

import time

BLOG_AUTHOR = "The Beyond the Quickstart team"
BLOG_TITLE = "Beyond the Quickstart"
# Served locally by `make serve` and the browser tests; links are relative
# (URL_TYPE below), so the built site also works from any other address.
SITE_URL = "http://127.0.0.1:8000/"
BLOG_EMAIL = "vae-guide@localhost"
BLOG_DESCRIPTION = "A tested guide to variational autoencoders in Keras 3."

DEFAULT_LANG = "en"
TRANSLATIONS = {DEFAULT_LANG: ""}

NAVIGATION_LINKS = {
    DEFAULT_LANG: (
        ("/archive.html", "Archive"),
        ("/listings/", "Listings"),
        ("/pages/performance/", "Performance"),
        ("/categories/", "Tags"),
    ),
}

# bootstrap4, not bootblog4: bootblog4 loads web fonts from another host.
THEME = "bootstrap4"
THEME_COLOR = "#5670d4"

POSTS = (("posts/*.rst", "posts", "post.tmpl"),)
PAGES = (("pages/*.rst", "pages", "page.tmpl"),)

TIMEZONE = "UTC"

FILES_FOLDERS = {"files": ""}
# The listings are the runnable programs that the posts quote.
LISTINGS_FOLDERS = {"listings": "listings"}

COMPILERS = {"rest": (".rst", ".txt")}


IMAGE_FOLDERS = {"images": "images"}

INDEX_TEASERS = True

LICENSE = ""
CONTENT_FOOTER = (
    "Contents &copy; {date} {author} &mdash; built with Nikola; "
    "every listing, figure and number on this site is generated and tested."
)
CONTENT_FOOTER_FORMATS = {
    DEFAULT_LANG: (
        (),
        {"email": BLOG_EMAIL, "author": BLOG_AUTHOR, "date": time.gmtime().tm_year, "license": LICENSE},
    )
}

# No comment system: it would load scripts from another host.
COMMENT_SYSTEM = ""
COMMENT_SYSTEM_ID = ""

STRIP_INDEXES = True
PRETTY_URLS = True

# MathJax 3 is served from files/assets/mathjax (copied from the npm package
# by `make site`); templates/math_helper.tmpl loads it instead of Nikola's CDN copy.
MATHJAX_CONFIG = """
<script>
window.MathJax = {
  tex: {inlineMath: [["\\\\(", "\\\\)"]], displayMath: [["\\\\[", "\\\\]"]], tags: "ams"},
  svg: {fontCache: "global"},
  options: {enableMenu: false}
};
</script>
"""

# Serve jQuery, Bootstrap and friends from the site itself.
USE_CDN = False

# An empty icon, so browsers do not ask for a missing /favicon.ico.
EXTRA_HEAD_DATA = '<link rel="icon" href="data:,">'

# Build-time numbers: the `result` shortcode (plugins/results) reads them
# from the JSON records the scripts write.
GLOBAL_CONTEXT = {}

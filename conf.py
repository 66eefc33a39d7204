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
        ("/pages/start/", "Start here"),
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
# The listings a reader copies, and the scripts that made every figure, table
# and number (each caption's "Source:" line links the script's page).
LISTINGS_FOLDERS = {"listings": "listings", "scripts": "scripts"}

COMPILERS = {"rest": (".rst", ".txt")}


IMAGE_FOLDERS = {"images": "images"}

INDEX_TEASERS = True
# The blog index leads a newcomer to the start page (reading order, notation).
FRONT_INDEX_HEADER = {
    DEFAULT_LANG: (
        '<p class="lead">A series of five posts on variational autoencoders in Keras 3. '
        'New here? <a href="/pages/start/">Start here</a>: the reading order, what each post teaches, '
        "the notation they share, and how to run the listings and the tests.</p>"
    )
}

# The code (listings, scripts, tests) is MIT-licensed, the text and figures
# CC BY 4.0; the LICENSE file has both, and the footer of every page says so.
LICENSE = (
    'Code: <a href="https://opensource.org/license/mit">MIT licence</a>; '
    'text and figures: <a href="https://creativecommons.org/licenses/by/4.0/">CC BY 4.0</a>.'
)
CONTENT_FOOTER = (
    "Contents &copy; {date} {author} &mdash; {license} Built with Nikola; "
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

# Maths are typeset at build time: the typeset_math filter (plugins/typeset_math,
# scripts/typeset_math.mjs: MathJax 3.2.2 from the pinned mathjax-full npm
# package, TeX delimiters \( \) and \[ \], tags "ams", SVG with a global font
# cache, assistive MathML) replaces each page's TeX with SVG, so pages load no
# MathJax script and templates/math_helper.tmpl adds nothing. The
# code_line_links filter (plugins/code_line_links) gives the line-number links
# of listings a name and takes the empty links off code lines in posts.
MATHJAX_CONFIG = ""
FILTERS = {".html": ["typeset_math", "code_line_links"]}

# Serve jQuery, Bootstrap and friends from the site itself.
USE_CDN = False

# An empty icon, so browsers do not ask for a missing /favicon.ico.
EXTRA_HEAD_DATA = '<link rel="icon" href="data:,">'

# Build-time numbers: the `result` shortcode (plugins/results) reads them
# from the JSON records the scripts write.
GLOBAL_CONTEXT = {}

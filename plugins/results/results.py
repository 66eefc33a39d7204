"""The ``result`` shortcode: put a number from a generated JSON record into a post.

    {{% result test_negative_elbo format=.1f %}}
    {{% result settings.mc_samples file=images/vae/diagrams.json %}}
    {{% result rows.vae-k1.test_nll minus=rows.vae-k1.paper_test_nll format=.1f %}}

``key`` is a dotted path into the record; ``file`` defaults to the post's
``results`` metadata field, else the main post's training record; ``minus``
is a second key of the same record whose value is subtracted (a gap between
two recorded numbers, never a typed one); ``format`` is a Python format spec.
A missing file or
key stops the build, so a post can never show a number its record lacks. The
record is a dependency of the post, so the post is rebuilt when it changes.
"""

import json
import os

from nikola.plugin_categories import ShortcodePlugin

DEFAULT_RECORD = os.path.join("results", "vae", "main_post.json")


def lookup(record, key, path):
    value = record
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(f"result shortcode: no key {key!r} in {path}")
    return value


def render(value, format_spec=None):
    if format_spec:
        return format(value, format_spec)
    if isinstance(value, float):
        return format(value, ".2f")
    return str(value)


def default_record(post=None):
    """The post's ``results`` metadata field, else the main post's record."""
    return (post.meta("results") if post is not None else "") or DEFAULT_RECORD


class Plugin(ShortcodePlugin):
    """Shortcode that reads a value from a generated results record."""

    name = "result"

    def handler(self, key=None, file=None, format=None, minus=None, site=None, data=None, lang=None, post=None):
        if not key:
            raise ValueError("result shortcode: expected a key, e.g. {{% result test_negative_elbo %}}")
        path = os.path.normpath(file or default_record(post))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"result shortcode: record {path} not found; run `make site`")
        with open(path) as f:
            record = json.load(f)
        value = lookup(record, key, path)
        if minus:
            value = value - lookup(record, minus, path)
        return render(value, format), [path]

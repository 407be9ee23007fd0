"""Template source checks that no rendering test would notice until a user saw the result."""

from pathlib import Path

from django.conf import settings


def test_no_comment_spans_lines():
    # Django's {# #} comment ends at the line's end: one left open is printed on the page, as the
    # dashboard once showed a paragraph of its own implementation notes. {% comment %} spans lines.
    open_comments = []
    for template in sorted(Path(settings.BASE_DIR, "templates").rglob("*.html")):
        for number, line in enumerate(template.read_text().splitlines(), 1):
            rest = line
            while "{#" in rest:
                rest = rest[rest.index("{#") + 2 :]
                if "#}" not in rest:
                    open_comments.append(f"{template.relative_to(settings.BASE_DIR)}:{number}")
                    break
                rest = rest[rest.index("#}") + 2 :]
    assert open_comments == [], "{# … #} must close on its line; use {% comment %} for more"

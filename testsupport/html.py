"""Reading the HTML pages and fragments the app serves, and the hostile Markdown the rendering tests feed it."""

from html.parser import HTMLParser


class Elements(HTMLParser):
    """Every element of a page as (tag, attributes, text inside it), in document order."""

    VOID = {"input", "meta", "link", "br", "img", "hr", "source", "wbr", "area", "base", "col", "embed"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict, list[str]]] = []
        self._open: list[list[str]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        text: list[str] = []
        self.elements.append((tag, dict(attrs), text))
        if tag not in self.VOID:
            self._open.append(text)

    def handle_endtag(self, tag):
        if tag not in self.VOID and self._open:
            self._open.pop()

    def handle_data(self, data):
        for text in self._open:
            text.append(data)

    def find(self, tag=None, **attrs) -> list[tuple[dict, str]]:
        return [
            (a, " ".join("".join(text).split()))
            for t, a, text in self.elements
            if (tag is None or t == tag) and all(self._matches(a, k.rstrip("_"), v) for k, v in attrs.items())
        ]

    @staticmethod
    def _matches(attrs: dict, name: str, wanted) -> bool:
        # wanted=True: the attribute is present (boolean attributes such as ws-send have no value).
        return name in attrs if wanted is True else attrs.get(name) == wanted


MARKDOWN_ANSWER = (
    "## Steps\n\n1. **Mix**\n2. Bake\n\n```python\nprint('<hi>')\n```\n\n| k | v |\n|---|---|\n| a | 1 |\n\n"
    "Euler: $e^{i\\pi} + 1 = 0$\n\n<script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1))"
)
MARKDOWN_PROMPT = "Write **bold** <b>now</b>\nsecond line <script>alert(1)</script>"


def assert_no_live_markup(doc: Elements):
    for tag, attrs, _ in doc.elements:
        if tag == "script":
            assert attrs.get("src", "").startswith("/static/"), attrs  # only the page's own scripts
        assert tag != "img" or attrs.get("src", "").startswith("/"), attrs
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        assert not attrs.get("href", "").lower().startswith("javascript"), attrs

"""Answers rendered as Markdown (chat/markdown.py): each feature, and model output that tries to run script, load a
URL or smuggle markup — always inert, its text still shown as text."""

from pathlib import Path

import pytest
from django.conf import settings

from chat.markdown import render_markdown, stylesheet
from testsupport.html import Elements


def elements(markdown: str, query_id="q", refs=()) -> Elements:
    return Elements(render_markdown(markdown, query_id, refs))


# --- each feature ------------------------------------------------------------------------------------------------


def test_headings_emphasis_and_strikethrough():
    html = render_markdown("# Title\n\n## Part\n\nSome **bold**, *italic* and ~~gone~~ text.")

    assert "<h1>Title</h1>" in html and "<h2>Part</h2>" in html
    assert "<strong>bold</strong>" in html and "<em>italic</em>" in html and "<s>gone</s>" in html


def test_lists_ordered_unordered_and_nested():
    doc = elements("- apples\n- pears\n  - green\n\n3. three\n4. four")

    assert [text for _, text in doc.find("li")] == ["apples", "pears green", "green", "three", "four"]
    ((ordered, _),) = doc.find("ol")
    assert ordered == {"start": "3"}
    assert len(doc.find("ul")) == 2


def test_tables_keep_their_alignment_and_scroll_in_a_wrapper():
    doc = elements("| Name | Cost |\n|:-----|-----:|\n| tea | 2 |\n| cake | 4 |")

    assert [text for _, text in doc.find("th")] == ["Name", "Cost"]
    assert [text for _, text in doc.find("td")] == ["tea", "2", "cake", "4"]
    assert [attrs.get("class") for attrs, _ in doc.find("td")] == ["align-left", "align-right"] * 2
    assert all("style" not in attrs for _, attrs, _ in doc.elements)  # no inline styles under a strict CSP
    assert doc.find("div", class_="table-wrap")


def test_links_open_in_a_new_tab_with_noopener_nofollow():
    doc = elements("See [the docs](https://example.com/a?b=1&c=2), <https://example.org>, [mail](mailto:a@b.example).")

    links = [(a["href"], a["rel"], a.get("target"), text) for a, text in doc.find("a")]
    assert links == [
        ("https://example.com/a?b=1&c=2", "noopener nofollow", "_blank", "the docs"),
        ("https://example.org", "noopener nofollow", "_blank", "https://example.org"),
        ("mailto:a@b.example", "noopener nofollow", "_blank", "mail"),
    ]


def test_inline_code_is_escaped_text():
    html = render_markdown("Use `a < b && c` here.")

    assert "<code>a &lt; b &amp;&amp; c</code>" in html


def test_a_fenced_block_is_highlighted_with_classes_labelled_and_has_a_copy_button():
    doc = elements("```python\ndef square(x):\n    return x * x  # <b>\n```")

    ((block, text),) = doc.find("div", class_="code-block")
    assert text.startswith("pythonCopydef square")
    ((button, label),) = doc.find("button")
    assert (button["class"], button["type"], button["aria-label"], label) == (
        "copy-code",
        "button",
        "Copy code",
        "Copy",
    )
    ((code, code_text),) = doc.find("code", class_="language-python")
    assert code_text == "def square(x): return x * x # <b>"  # the comment's <b> is text
    assert [text for _, text in doc.find("span", class_="k")] == ["def", "return"]
    assert doc.find("span", class_="c1")  # the comment


def test_the_copied_code_is_exactly_the_source():
    html = render_markdown("```js\nconst a = '<x>';\n\nf(a);\n```")
    doc = Elements(html)

    ((_, raw),) = [(a, "".join(t)) for tag, a, t in doc.elements if tag == "code"]
    assert raw == "const a = '<x>';\n\nf(a);"  # no trailing newline from the closing fence


def test_unknown_or_missing_languages_are_shown_plain():
    for markdown in ("```no-such-language\nx < y\n```", "```\nx < y\n```", "    x < y"):
        doc = elements(markdown)
        ((_, text),) = doc.find("pre")
        assert text == "x < y"
        assert not doc.find("span", class_="n")
        assert doc.find("button", class_="copy-code")


def test_math_is_left_as_escaped_tex_for_katex():
    doc = elements("Inline $a^2 + b^2 < c$ and\n\n$$\n\\frac{1}{2}\n$$\n\nand $$x$$ inline.")

    assert [(a["class"], text) for a, text in doc.find(class_="math math-inline")] == [
        ("math math-inline", "a^2 + b^2 < c")
    ]
    assert [text for _, text in doc.find(class_="math math-display")] == ["\\frac{1}{2}", "x"]
    assert [tag for tag, a, _ in doc.elements if a.get("class") == "math math-display"] == ["div", "span"]


@pytest.mark.parametrize(
    "markdown",
    ["It costs $5 and $10.", "From $5-$10 a month", "$ not math $", "\\$x\\$ escaped", "`$x$` is code"],
)
def test_dollars_that_are_not_math_stay_text(markdown):
    assert 'class="math' not in render_markdown(markdown)


def test_math_may_start_a_paragraph_that_ends_with_a_digit():
    assert render_markdown("$x$ is 2") == '<p><span class="math math-inline">x</span> is 2</p>\n'


def test_single_line_breaks_are_kept():
    assert render_markdown("first line\nsecond line") == "<p>first line<br>\nsecond line</p>\n"


def test_citation_markers_naming_a_source_link_to_it():
    doc = elements("It is 4471 [1], see [W1] and [1, W1]; not [7] nor `[1]` nor [x].", "q9", ["1", "W1"])

    assert [(a["href"], a["class"], text) for a, text in doc.find("a")] == [
        ("#source-q9-1", "cite", "1"),
        ("#source-q9-W1", "cite", "W1"),
        ("#source-q9-1", "cite", "1"),
        ("#source-q9-W1", "cite", "W1"),
    ]
    ((_, paragraph),) = doc.find("p")
    assert paragraph == "It is 4471 [1], see [W1] and [1, W1]; not [7] nor [1] nor [x]."
    assert all(a.get("target") is None for a, _ in doc.find("a"))  # they stay in the page


def test_markers_are_not_links_without_sources():
    assert "<a" not in render_markdown("Per [1] and [W1].")


# --- untrusted output: nothing runs, nothing loads, the text stays visible ---------------------------------------

XSS = [
    '<script>alert("x")</script>',
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    '<a href="javascript:alert(1)">raw link</a>',
    "<iframe src=https://evil.example/></iframe>",
    '<div onclick="alert(1)" style="position:fixed">div</div>',
    "<style>body{display:none}</style>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x]( javascript:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](&#x6A;&#x61;vascript:alert(1))",
    "[x](java\tscript:alert(1))",
    "[x](vbscript:msgbox(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](file:///etc/passwd)",
    "[x](/accounts/logout/)",
    "[x](//evil.example/path)",
    '[x](https://example.com "title" onmouseover="alert(1)")',
    "<javascript:alert(1)>",
    "![x](https://evil.example/pixel.png)",
    "![x](javascript:alert(1))",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;img src=x onerror=alert(1)&#62;",
    "```html\n<script>alert(1)</script>\n```",
    '```"><img src=x onerror=alert(1)>\ncode\n```',
    "`<img src=x onerror=alert(1)>`",
    "$\\href{javascript:alert(1)}{x}$ <b onmouseover=alert(1)>b</b>",
    "[<img src=x onerror=alert(1)>](https://example.com)",
    "<!-- comment --><scr<script>ipt>alert(1)</script>",
]


@pytest.mark.parametrize("payload", XSS)
def test_untrusted_markup_is_inert(payload):
    html = render_markdown(payload, "q", ["1"])
    doc = Elements(html)

    tags = {tag for tag, _, _ in doc.elements}
    assert tags <= {"p", "a", "code", "pre", "div", "span", "button", "br"}, tags
    for tag, attrs, _ in doc.elements:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs and "src" not in attrs
        if tag == "a":
            assert attrs["href"].startswith(("https://", "mailto:", "#source-")), attrs
    assert "<script" not in html.lower()


@pytest.mark.parametrize(
    "payload,visible",
    [
        ('<script>alert("x")</script>', '<script>alert("x")</script>'),
        ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),
        ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),
        ("[x](JaVaScRiPt:alert(1))", "[x](JaVaScRiPt:alert(1))"),
        ("&lt;b&gt;not bold&lt;/b&gt;", "<b>not bold</b>"),
        ("[x](data:text/html;base64,AAAA)", "[x](data:text/html;base64,AAAA)"),
    ],
)
def test_refused_markup_is_shown_as_text(payload, visible):
    doc = elements(payload)

    ((_, text),) = doc.find("p")
    assert text == visible
    assert not doc.find("a") and not doc.find("img") and not doc.find("script")


def test_a_markdown_image_becomes_a_link_and_loads_nothing():
    doc = elements("![a cat](https://example.com/cat.png)")

    assert not doc.find("img")
    assert [(a["href"], text) for a, text in doc.find("a")] == [("https://example.com/cat.png", "a cat")]


def test_only_our_own_relative_links_survive_the_sanitiser():
    from chat.markdown import sanitize

    html = sanitize('<a href="#source-q-1">1</a><a href="/admin/">a</a><a href="#top">t</a><a href="x.html">x</a>')

    assert [a.get("href") for a, _ in Elements(html).find("a")] == ["#source-q-1", None, None, None]


def test_empty_and_huge_input():
    assert render_markdown("") == ""
    assert render_markdown(None) == ""
    big = "```python\n" + "x = 1\n" * 30_000 + "```"
    html = render_markdown(big)
    assert html.count("x = 1") == 30_000 and '<span class="n">' not in html  # too big to highlight: plain


# --- the generated stylesheet ------------------------------------------------------------------------------------


def test_the_committed_pygments_stylesheet_is_the_generated_one():
    committed = (Path(settings.BASE_DIR) / "static/css/pygments.css").read_text()

    assert committed == stylesheet(), "regenerate: python -m chat.markdown --css > static/css/pygments.css"
    assert '[data-theme="light"] .highlight .k' in committed and '[data-theme="dark"] .highlight .k' in committed

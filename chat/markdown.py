"""Answers as HTML: the model's Markdown rendered on the server, then sanitised.

Model output is untrusted (a prompt, a file or a web page can make a model write anything), so three layers keep
it from running script in the page:
  1. markdown-it never passes raw HTML through (`html=False`: `<script>` is shown as text), accepts only http(s)
     and mailto link targets (anything else stays literal text) and renders no images (a Markdown image would make
     the browser fetch a URL the model chose; it becomes a plain link instead);
  2. every text, code and math body is HTML-escaped by the renderers;
  3. nh3 (ammonia) cleans the result with an allow-list of tags, attributes, classes and URL schemes, last.

Code blocks are highlighted by Pygments with CSS classes (static/css/pygments.css, written by
`python -m chat.markdown --css`), and carry a copy button (static/js/chat.js). Math (`$…$`, `$$…$$`) is left as
escaped TeX in `.math` elements that KaTeX (vendored under static/vendor/katex) typesets in the browser.
Citation markers ([1], [W2], [1, W2]) that name one of the answer's sources link to its entry in the source list.
"""

import html
import re
import sys
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.dollarmath.index import math_inline_dollar
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_all_lexers, get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

# [1], [W2], and groups such as [1, 3] or [1][W2]: how the grounding instructions ask models to cite.
CITATION = re.compile(r"\[((?:W?\d{1,3})(?:\s*,\s*W?\d{1,3})*)\]")
LINK_SCHEMES = ("http://", "https://", "mailto:")
LINK_REL = "noopener nofollow"
PYGMENTS_CLASS = "highlight"
LIGHT_STYLE, DARK_STYLE = "default", "github-dark"
MAX_HIGHLIGHT_CHARS = 100_000  # past this a code block is shown unhighlighted: Pygments is linear but not free

_ALLOWED_TAGS = {
    *("p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li"),
    *("strong", "em", "s", "del", "code", "pre", "span", "div", "a", "button", "sup", "sub"),
    *("table", "thead", "tbody", "tr", "th", "td"),
}
# `class` is governed by allowed_classes below (ammonia refuses it in both places).
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "button": {"aria-label", "title"},
}
_FIXED_ATTRIBUTES = {
    "a": {"target": {"_blank"}},
    "button": {"type": {"button"}},
}


def _allowed_classes() -> dict[str, set[str]]:
    # Every short class name Pygments may emit (its token types), plus our own.
    token_classes = {name for name in STANDARD_TYPES.values() if name}
    return {
        "span": token_classes | {"math", "math-inline", "math-display", "code-lang"},
        "div": {PYGMENTS_CLASS, "code-block", "code-head", "math", "math-display", "table-wrap"},
        "pre": {PYGMENTS_CLASS},
        "code": {f"language-{name}" for name in _known_language_classes()},
        "a": {"cite"},
        "button": {"copy-code"},
        "th": set(_ALIGN_CLASSES.values()),
        "td": set(_ALIGN_CLASSES.values()),
    }


@lru_cache(maxsize=1)
def _known_language_classes() -> frozenset[str]:
    return frozenset(alias for _, aliases, _, _ in get_all_lexers() for alias in aliases if _SAFE_LANG.fullmatch(alias))


_SAFE_LANG = re.compile(r"[A-Za-z0-9_+#.-]{1,40}")


_ALIGN_CLASSES = {f"text-align:{side}": f"align-{side}" for side in ("left", "center", "right")}


def _only_fragments(url: str):
    # Relative URLs are ours only: the citation links (#source-…). A model's relative link never parses as a link.
    return url if url.startswith("#source-") else None


@lru_cache(maxsize=1)
def _cleaner():
    return nh3.Cleaner(
        tags=_ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes=_ALLOWED_ATTRIBUTES,
        tag_attribute_values=_FIXED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        url_relative=_only_fragments,
        allowed_classes=_allowed_classes(),
        link_rel=LINK_REL,
        strip_comments=True,
    )


def sanitize(fragment: str) -> str:
    return _cleaner().clean(fragment)


# --- markdown-it ------------------------------------------------------------------------------------------------


def _validate_link(url: str) -> bool:
    return url.strip().lower().startswith(LINK_SCHEMES)


def _fence(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    info = token.info.strip().split(maxsplit=1)[0] if token.info.strip() else ""
    return code_block(token.content, info)


def _code_block(self, tokens, idx, options, env) -> str:
    return code_block(tokens[idx].content, "")


def _link_open(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    href = token.attrGet("href") or ""
    if not href.startswith("#"):
        token.attrSet("target", "_blank")  # the chat stays open; the link's rel is set by the sanitiser
    return self.renderToken(tokens, idx, options, env)


def _math_inline(self, tokens, idx, options, env) -> str:
    return f'<span class="math math-inline">{html.escape(tokens[idx].content)}</span>'


def _math_inline_display(self, tokens, idx, options, env) -> str:
    # $$…$$ inside a paragraph: displayed, but a <span>, since a <div> cannot sit inside a <p>.
    return f'<span class="math math-display">{html.escape(tokens[idx].content)}</span>'


def _math_block(self, tokens, idx, options, env) -> str:
    return f'<div class="math math-display">{html.escape(tokens[idx].content.strip())}</div>\n'


def _table_open(self, tokens, idx, options, env) -> str:
    return '<div class="table-wrap">' + self.renderToken(tokens, idx, options, env)


def _table_close(self, tokens, idx, options, env) -> str:
    return self.renderToken(tokens, idx, options, env) + "</div>\n"


def _alignment_as_classes(state) -> None:
    """Table cells say their alignment with a class, not markdown-it's style attribute: a strict
    Content-Security-Policy (no 'unsafe-inline' styles) would ignore the attribute."""
    for token in state.tokens:
        if token.type in ("th_open", "td_open") and token.attrs.get("style"):
            align = _ALIGN_CLASSES.get(str(token.attrs.pop("style")))
            if align:
                token.attrSet("class", align)


def _link_citations(state) -> None:
    """Turn [n] markers in plain text into links to the answer's source list (env["cite"]: query id and refs)."""
    cite = state.env.get("cite")
    if not cite or not cite["refs"]:
        return
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children = []
        inside_link = 0
        for token in block.children:
            if token.type == "link_open":
                inside_link += 1
            elif token.type == "link_close":
                inside_link -= 1
            if token.type != "text" or inside_link or not CITATION.search(token.content):
                children.append(token)
                continue
            children.extend(_split_citations(token.content, cite))
        block.children = children


def _split_citations(text: str, cite: dict) -> list[Token]:
    tokens: list[Token] = []
    position = 0

    def add_text(content: str):
        if content:
            token = Token("text", "", 0)
            token.content = content
            tokens.append(token)

    for match in CITATION.finditer(text):
        parts = [part.strip() for part in match.group(1).split(",")]
        if not all(part in cite["refs"] for part in parts):
            continue
        add_text(text[position : match.start()] + "[")
        for number, part in enumerate(parts):
            if number:
                add_text(", ")
            link = Token("link_open", "a", 1)
            link.attrs = {"class": "cite", "href": f"#source-{cite['query_id']}-{part}"}
            tokens.append(link)
            add_text(part)
            tokens.append(Token("link_close", "a", -1))
        add_text("]")
        position = match.end()
    add_text(text[position:])
    return tokens


def _math_inline_rule(plugin_rule):
    """The plugin's inline rule, except at the very start of a paragraph: there it looks for a digit before the
    opening $ at src[-1], the paragraph's last character, and so refuses "$x$ is 2"; it sees a newline instead."""

    def math_inline(state, silent):
        if state.pos != 0:
            return plugin_rule(state, silent)
        source = state.src
        state.src = source + "\n"
        try:
            return plugin_rule(state, silent)
        finally:
            state.src = source

    return math_inline


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.disable(["image", "html_inline", "html_block"])
    md.validateLink = _validate_link
    # Pandoc's rules: no space inside the dollars and no digit after the closing one, so "$5 and $10" stays text.
    dollarmath_plugin(md, allow_space=False, allow_digits=False, allow_labels=False, double_inline=True)
    md.inline.ruler.at("math_inline", _math_inline_rule(math_inline_dollar(False, False, True)))
    md.core.ruler.push("citations", _link_citations)
    md.core.ruler.push("table_alignment", _alignment_as_classes)
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _code_block)
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("math_inline", _math_inline)
    md.add_render_rule("math_inline_double", _math_inline_display)
    md.add_render_rule("math_block", _math_block)
    md.add_render_rule("table_open", _table_open)
    md.add_render_rule("table_close", _table_close)
    return md


# --- code ---------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _formatter() -> HtmlFormatter:
    return HtmlFormatter(cssclass=PYGMENTS_CLASS, nowrap=True)


def code_block(code: str, language: str) -> str:
    """A highlighted code block with its language label and a copy button (the button works from chat.js)."""
    language = language if _SAFE_LANG.fullmatch(language or "") else ""
    lexer = None
    if language and len(code) <= MAX_HIGHLIGHT_CHARS:
        try:
            lexer = get_lexer_by_name(language.lower(), stripnl=False, ensurenl=False)
        except ClassNotFound:
            lexer = None
    code = code.removesuffix("\n")  # the fence's closing line; a copied snippet should not end with it
    body = highlight(code, lexer, _formatter()).removesuffix("\n") if lexer else html.escape(code)
    code_class = f' class="language-{html.escape(language.lower())}"' if lexer else ""
    label = html.escape(language) if language else "code"
    return (
        '<div class="code-block">'
        f'<div class="code-head"><span class="code-lang">{label}</span>'
        '<button type="button" class="copy-code" aria-label="Copy code" title="Copy code">Copy</button></div>'
        f'<pre class="{PYGMENTS_CLASS}"><code{code_class}>{body}</code></pre></div>\n'
    )


# --- the entry point -------------------------------------------------------------------------------------------------


def render_markdown(text: str, query_id=None, source_refs=()) -> str:
    """The answer's Markdown as sanitised HTML; [n] markers naming one of `source_refs` link to #source-<id>-<n>."""
    env = {"cite": {"query_id": str(query_id), "refs": {str(ref) for ref in source_refs}}} if source_refs else {}
    return sanitize(_markdown().render(text or "", env))


def _style_rules(style: str, scope: str) -> str:
    formatter = HtmlFormatter(style=style)
    selector = f"{scope} .{PYGMENTS_CLASS}"
    # Token colours and background only: the generic rules (pre, line numbers) would leak out of the scope.
    return "\n".join([*formatter.get_background_style_defs(selector), *formatter.get_token_style_defs(selector)])


def stylesheet() -> str:
    """Pygments' token colours for both themes, under <html data-theme="light|dark"> (static/js/theme.js sets it
    before first paint) or, with no attribute (no script), after the system's preference."""
    light_scope, dark_scope, unset = '[data-theme="light"]', '[data-theme="dark"]', ":root:not([data-theme])"
    return (
        f"/* Generated by `python -m chat.markdown --css > static/css/pygments.css`: Pygments' {LIGHT_STYLE} and"
        f" {DARK_STYLE} styles. Do not edit. */\n"
        f"{_style_rules(LIGHT_STYLE, light_scope)}\n"
        f"{_style_rules(DARK_STYLE, dark_scope)}\n"
        f"@media (prefers-color-scheme: light) {{\n{_style_rules(LIGHT_STYLE, unset)}\n}}\n"
        f"@media (prefers-color-scheme: dark) {{\n{_style_rules(DARK_STYLE, unset)}\n}}\n"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--css"]:
        sys.stdout.write(stylesheet())
    else:
        sys.stderr.write("usage: python -m chat.markdown --css > static/css/pygments.css\n")
        sys.exit(2)

"""Making the HTML of a received message safe to show in the webmail.

Why nh3 and not a sanitiser of our own: nh3 binds ammonia, a maintained allow-list sanitiser
written in Rust, which parses with html5ever, an implementation of the WHATWG HTML parsing
algorithm that browsers run, then writes back only the tree it kept, in a canonical form. A
hand-written sanitiser (regular expressions, or ``html.parser`` plus a deny-list) reads some
markup differently from the browser, and each difference is a script run in the webmail's
origin: entity- or whitespace-obfuscated ``javascript:`` URLs, unclosed tags, comments and
CDATA, ``<svg>`` and ``<math>`` namespace confusion, ``<noscript>``/``<template>`` mutation XSS.
Here everything that is not listed is dropped; nothing is recognised as "bad".

What is kept:

* structural, text, list and table elements, ``a``, ``img``, ``font``, ``center``… (:data:`_TAGS`);
  ``script``, ``style``, ``svg``, ``math``, ``iframe``, ``object``, ``template``… are dropped with
  their content (:data:`_CLEAN_CONTENT_TAGS`); ``form``, ``base``, ``meta``, ``link`` are dropped;
* presentational attributes; no event handler, no ``class``/``id`` (they would reach the
  webmail's own CSS and anchors); ``style`` keeps only the properties of
  :data:`_STYLE_PROPERTIES`, and a style holding ``url(``, ``expression``, a CSS escape or a
  comment is dropped whole;
* URLs with the schemes ``http``, ``https``, ``mailto`` and ``cid`` (RFC 2392) only, and no
  relative URL (it would reach the webmail itself) except those this module writes;
* links open elsewhere: ``target="_blank"`` and ``rel="noopener noreferrer"``.

Images: ``cid:`` sources (RFC 2392, the parts of a ``multipart/related``, RFC 2387) become the
caller's URL for that part; remote ones are blocked (they tell the sender when and where the
message is read) unless the reader asked for them, and then go through the caller's proxy.
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import nh3

_TAGS = frozenset(
    {
        *("a", "abbr", "acronym", "address", "b", "bdi", "bdo", "big", "blockquote", "br"),
        *("caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div"),
        *("dl", "dt", "em", "figcaption", "figure", "font", "h1", "h2", "h3", "h4", "h5", "h6"),
        *("hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp"),
        *("small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot"),
        *("th", "thead", "tr", "tt", "u", "ul", "var", "wbr"),
        *("article", "aside", "footer", "header", "main", "nav", "section"),
    }
)
# dropped together with everything inside them (disjoint from _TAGS, as nh3 requires)
_CLEAN_CONTENT_TAGS = frozenset(
    {
        *("script", "style", "template", "noscript", "noembed", "noframes", "iframe", "frame"),
        *("frameset", "object", "embed", "applet", "svg", "math", "title", "textarea"),
        *("select", "xmp", "audio", "video", "canvas", "head"),
    }
)
_GENERIC_ATTRIBUTES = frozenset(
    {"align", "valign", "dir", "lang", "title", "style", "width", "height", "bgcolor"}
)
_TAG_ATTRIBUTES = (
    ("a", frozenset({"href"})),
    ("img", frozenset({"src", "alt", "border", "hspace", "vspace"})),
    ("font", frozenset({"color", "face", "size"})),
    ("table", frozenset({"border", "cellpadding", "cellspacing", "summary", "frame", "rules"})),
    ("td", frozenset({"colspan", "rowspan", "nowrap", "headers", "abbr"})),
    ("th", frozenset({"colspan", "rowspan", "nowrap", "headers", "abbr", "scope"})),
    ("col", frozenset({"span"})),
    ("colgroup", frozenset({"span"})),
    ("ol", frozenset({"start", "type", "reversed"})),
    ("ul", frozenset({"type"})),
    ("li", frozenset({"value", "type"})),
    ("hr", frozenset({"size", "noshade"})),
)
_SIDES = ("", "-top", "-right", "-bottom", "-left")
# no property that loads a resource (background, border-image, list-style, cursor…) or moves the
# box out of the message (position, z-index, transform…)
_STYLE_PROPERTIES = frozenset(
    {
        *("color", "background-color", "text-align", "text-decoration", "text-indent"),
        *("font", "font-family", "font-size", "font-style", "font-weight", "font-variant"),
        *("line-height", "letter-spacing", "vertical-align", "white-space"),
        *("width", "height", "max-width", "min-width", "max-height", "min-height"),
        *("border-collapse", "border-spacing", "border-radius"),
        *(f"margin{side}" for side in _SIDES),
        *(f"padding{side}" for side in _SIDES),
        *(f"border{side}" for side in _SIDES),
        *(f"border{side}-{what}" for side in _SIDES for what in ("color", "style", "width")),
    }
)
# a style holding one of these is dropped whole: nh3 normalises CSS, and an escape like
# "u\72l(" would come out as "url("
_STYLE_FORBIDDEN = ("\\", "/*", "url(", "image(", "image-set(", "expression", "javascript")
_STYLE_FORBIDDEN_MORE = ("vbscript", "@import", "behavior", "binding", "<", "&")
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_REMOTE_SCHEMES = frozenset({"http", "https"})
_URL_SCHEMES = _LINK_SCHEMES | {"cid"}
_LINK_REL = "noopener noreferrer"
_BLOCKED_ALT = "image bloquée"
_IMG_TAG = re.compile(r"<img\b[^>]*>")  # in nh3's output, ">" inside a value is "&gt;"
_SRC_OR_ALT = re.compile(r'\s(?:src|alt)="[^"]*"')  # and '"' is "&quot;"
_TEXT_URL = re.compile(r"""https?://[^\s<>"'`]+""", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?)]}'\"»"


@dataclass(frozen=True)
class SafeHtml:
    """Sanitised HTML, and how many remote images it does not load."""

    html: str
    blocked_images: int  # remote images replaced by a placeholder (data-blocked="1")


def sanitize_html(
    html: str,
    *,
    cid_url: Callable[[str], str | None],
    allow_remote_images: bool = False,
    remote_image_url: Callable[[str], str] | None = None,
) -> SafeHtml:
    """``html`` with only what :data:`_TAGS` and the attribute lists allow.

    ``cid_url`` maps a Content-ID (RFC 2392, without angle brackets) to the URL of that part,
    ``None`` to drop the reference. Remote images are blocked (no ``src``, ``data-blocked="1"``,
    ``alt="image bloquée"``), or with ``allow_remote_images`` given ``remote_image_url(url)``.
    """
    if allow_remote_images and remote_image_url is None:
        raise ValueError("allow_remote_images needs remote_image_url (a same-origin proxy)")
    rewriter = _Rewriter(cid_url, remote_image_url if allow_remote_images else None)
    cleaned = nh3.clean(
        html,
        tags=set(_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT_TAGS),
        attributes=_attributes(),
        attribute_filter=rewriter.attribute,
        strip_comments=True,
        link_rel=_LINK_REL,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes=set(_URL_SCHEMES),
        filter_style_properties=set(_STYLE_PROPERTIES),
        url_relative=rewriter.relative,
    )
    return _mark_blocked(cleaned, rewriter.marker)


def text_to_html(text: str) -> str:
    """A text/plain body as HTML: escaped, wrapped, its http(s) URLs made links."""
    text = text.replace("\r\n", "\n")
    pieces: list[str] = []
    position = 0
    for match in _TEXT_URL.finditer(text):
        url = match.group(0).rstrip(_TRAILING_PUNCTUATION)
        if url.endswith("://"):
            continue
        pieces.append(html_lib.escape(text[position : match.start()]))
        escaped = html_lib.escape(url)
        pieces.append(f'<a href="{escaped}" rel="{_LINK_REL}" target="_blank">{escaped}</a>')
        position = match.start() + len(url)
    pieces.append(html_lib.escape(text[position:]))
    return (
        '<pre class="mail-text" style="white-space: pre-wrap; overflow-wrap: anywhere">'
        + "".join(pieces)
        + "</pre>"
    )


class _Rewriter:
    """The ``attribute_filter`` and ``url_relative`` of one :func:`sanitize_html` call.

    nh3 checks the URL scheme before calling :meth:`attribute` and does not check what it
    returns, so every URL returned here is either the original (scheme already checked) or one
    the caller made. nh3 calls :meth:`relative` after :meth:`attribute`: only the relative URLs
    this object returned pass.
    """

    def __init__(
        self, cid_url: Callable[[str], str | None], remote_image_url: Callable[[str], str] | None
    ) -> None:
        self._cid_url = cid_url
        self._remote_image_url = remote_image_url  # None: remote images are blocked
        self.marker = f"mss-blocked-{secrets.token_hex(12)}"  # not guessable by the sender
        self._produced = {self.marker}

    def attribute(self, tag: str, name: str, value: str) -> str | None:
        if name == "style":
            return _safe_style(value)
        if name == "href":
            return self._href(value)
        if name == "src":
            return self._src(value) if tag == "img" else None
        return value

    def relative(self, url: str) -> str | None:
        return url if url in self._produced else None

    def _href(self, value: str) -> str | None:
        scheme = _scheme(value)
        if scheme == "cid":
            return self._own(self._cid_url(_content_id(value)))
        return value if scheme in _LINK_SCHEMES else None

    def _src(self, value: str) -> str | None:
        scheme = _scheme(value)
        if scheme == "cid":
            return self._own(self._cid_url(_content_id(value)))
        if scheme not in _REMOTE_SCHEMES:
            return None
        if self._remote_image_url is None:
            return self.marker
        return self._own(self._remote_image_url(value))

    def _own(self, url: str | None) -> str | None:
        if url is not None:
            self._produced.add(url)
        return url


def _attributes() -> dict[str, set[str]]:
    """The attribute allow-list in the shape nh3 takes (a new dict each call)."""
    attributes = {tag: set(names) for tag, names in _TAG_ATTRIBUTES}
    attributes["*"] = set(_GENERIC_ATTRIBUTES)
    return attributes


def _safe_style(value: str) -> str | None:
    """The style as given (nh3 then keeps the allowed properties), or ``None`` if suspicious."""
    lowered = value.lower()
    if any(token in lowered for token in _STYLE_FORBIDDEN + _STYLE_FORBIDDEN_MORE):
        return None
    return value


def _scheme(url: str) -> str:
    """The URL's scheme, lower case; "" for a relative URL."""
    scheme, colon, _ = url.strip().partition(":")
    return scheme.lower() if colon and "/" not in scheme else ""


def _content_id(cid: str) -> str:
    """The Content-ID a ``cid:`` URL names (RFC 2392 §2: URL-encoded, without brackets)."""
    return unquote(cid.strip().partition(":")[2]).strip().strip("<>")


def _mark_blocked(cleaned: str, marker: str) -> SafeHtml:
    """Remote images, whose ``src`` the filter set to ``marker``, become placeholders.

    nh3 cannot add an attribute to one element only, so this is done on its output, which is
    canonical: every attribute is written ``name="value"`` with ``"``, ``<`` and ``>`` escaped
    inside the value, so a tag ends at the first ``>`` and a value at the next ``"``.
    """
    needle = f' src="{marker}"'
    blocked = 0

    def placeholder(match: re.Match[str]) -> str:
        nonlocal blocked
        tag = match.group(0)
        if needle not in tag:
            return tag
        blocked += 1
        rest = _SRC_OR_ALT.sub("", tag[len("<img") : -1])
        return f'<img data-blocked="1" alt="{_BLOCKED_ALT}"{rest}>'

    html = _IMG_TAG.sub(placeholder, cleaned)
    return SafeHtml(html=html, blocked_images=blocked)

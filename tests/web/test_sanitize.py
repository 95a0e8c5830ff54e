"""Sanitising received HTML (web/sanitize.py): an XSS corpus, then what is kept and rewritten."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mssante.web.sanitize import SafeHtml, sanitize_html, text_to_html

CORPUS = Path(__file__).parent / "data" / "xss.txt"
PAYLOADS = CORPUS.read_text(encoding="utf-8").splitlines()
# a NUL byte would make the corpus a binary file for git and grep: these are built here
NUL_PAYLOADS = [
    "<scr\x00ipt>alert(1)</scr\x00ipt>",
    "<img src=x o\x00nerror=alert(1)>",
    '<a href="java\x00script:alert(1)">clic</a>',
    '<a href="\x00javascript:alert(1)">clic</a>',
    "<img src=x onerror\x00=alert(1)>",
]
FORBIDDEN_TAGS = frozenset(
    {
        *("script", "style", "iframe", "frame", "frameset", "object", "embed", "applet"),
        *("form", "input", "button", "select", "textarea", "keygen", "isindex", "svg", "math"),
        *("base", "meta", "link", "template", "noscript", "video", "audio", "source", "marquee"),
        *("xmp", "listing", "plaintext", "animate", "set", "use", "foreignobject", "body"),
    }
)
FORBIDDEN_ATTRIBUTES = frozenset(
    {
        *("srcdoc", "srcset", "dynsrc", "lowsrc", "background", "action", "formaction", "data"),
        *("code", "codebase", "xlink:href", "id", "class", "contenteditable", "autofocus"),
    }
)
CID_PREFIX = "/webmail/part/"


def cid_url(content_id: str) -> str | None:
    return CID_PREFIX + content_id


class Collector(HTMLParser):
    """Every start tag of the output and its attributes, as a browser-like tokenizer reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))


def elements(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    collector = Collector()
    collector.feed(html)
    collector.close()
    return collector.elements


def url_is_safe(value: str) -> bool:
    squeezed = re.sub(r"[\x00-\x20\x7f-\x9f]", "", value).lower()
    if squeezed.startswith(("javascript:", "vbscript:", "data:")):
        return False
    return squeezed.startswith(("http://", "https://", "mailto:", CID_PREFIX))


def assert_safe(html: str) -> None:
    assert not re.search(r"<\s*script", html, re.IGNORECASE), html
    for tag, attrs in elements(html):
        assert tag not in FORBIDDEN_TAGS, html
        for name, value in attrs:
            assert not name.startswith("on"), html
            assert name not in FORBIDDEN_ATTRIBUTES, html
            if name in ("href", "src"):
                assert value is not None
                assert url_is_safe(value), html
            if name == "style":
                assert value is not None
                lowered = value.lower()
                for bad in ("url(", "expression", "javascript", "position", "behavior", "binding"):
                    assert bad not in lowered, html
            if name == "target":
                assert value == "_blank"


def test_the_corpus_is_large_and_one_payload_per_line() -> None:
    assert len(PAYLOADS) >= 60
    assert all(line.strip() for line in PAYLOADS)
    assert len(set(PAYLOADS)) == len(PAYLOADS)


@pytest.mark.parametrize("payload", PAYLOADS + NUL_PAYLOADS)
def test_xss_payload_is_neutralised(payload: str) -> None:
    for allow in (False, True):
        safe = sanitize_html(
            payload,
            cid_url=cid_url,
            allow_remote_images=allow,
            remote_image_url=lambda url: "https://webmail.test/proxy?u=" + url,
        )
        assert_safe(safe.html)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_xss_payload_inside_a_mail_document_is_neutralised(payload: str) -> None:
    document = (
        "<!doctype html><html><head><title>t</title></head><body><table><tr><td>"
        + payload
        + "</td></tr></table><p>fin</p></body></html>"
    )
    assert_safe(sanitize_html(document, cid_url=cid_url).html)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_sanitising_twice_stays_safe(payload: str) -> None:
    once = sanitize_html(payload, cid_url=cid_url).html
    assert_safe(sanitize_html(once, cid_url=cid_url).html)


# -- images -------------------------------------------------------------------------------------


def test_remote_images_are_blocked_and_counted() -> None:
    html = (
        '<p>Bonjour<img src="https://tracker.test/pixel.gif?id=42" alt="" width="1">'
        '<img alt="logo" src="http://cdn.test/logo.png">'
        '<img src="cid:sig@x" alt="signature"></p>'
    )

    safe = sanitize_html(html, cid_url=cid_url)

    assert safe.blocked_images == 2
    assert "tracker.test" not in safe.html
    assert "cdn.test" not in safe.html
    images = [dict(attrs) for tag, attrs in elements(safe.html) if tag == "img"]
    assert images == [
        {"data-blocked": "1", "alt": "image bloquée", "width": "1"},
        {"data-blocked": "1", "alt": "image bloquée"},
        {"src": "/webmail/part/sig@x", "alt": "signature"},
    ]


def test_a_sender_cannot_fake_or_hide_a_blocked_image() -> None:
    html = (
        '<img data-blocked="1" alt="image bloquée">'
        '<img src="mss-blocked-0000" alt="x">'
        '<img title=\'src="mss-blocked-0000"\' src="https://t.test/a.png">'
    )

    safe = sanitize_html(html, cid_url=cid_url)

    assert safe.blocked_images == 1
    assert safe.html.count('data-blocked="1"') == 1
    assert "mss-blocked" not in safe.html.replace("&quot;mss-blocked-0000&quot;", "")


def test_remote_images_allowed_go_through_the_proxy() -> None:
    seen: list[str] = []

    def proxy(url: str) -> str:
        seen.append(url)
        return "/webmail/proxy?u=" + url.replace("&", "%26")

    safe = sanitize_html(
        '<img src="https://cdn.test/logo.png?a=1&amp;b=2" alt="logo">',
        cid_url=cid_url,
        allow_remote_images=True,
        remote_image_url=proxy,
    )

    assert safe == SafeHtml(
        html='<img src="/webmail/proxy?u=https://cdn.test/logo.png?a=1%26b=2" alt="logo">',
        blocked_images=0,
    )
    assert seen == ["https://cdn.test/logo.png?a=1&b=2"]


def test_allowing_remote_images_needs_a_proxy() -> None:
    with pytest.raises(ValueError, match="remote_image_url"):
        sanitize_html("<p>x</p>", cid_url=cid_url, allow_remote_images=True)


def test_cid_images_are_rewritten_or_dropped() -> None:
    asked: list[str] = []

    def only_logo(content_id: str) -> str | None:
        asked.append(content_id)
        return "/webmail/part/2.2?inline=1" if content_id == "logo@hopital.test" else None

    safe = sanitize_html(
        '<img src="cid:logo%40hopital.test"><img src="CID:absent@x" alt="absente">',
        cid_url=only_logo,
    )

    assert safe.html == '<img src="/webmail/part/2.2?inline=1"><img alt="absente">'
    assert asked == ["logo@hopital.test", "absent@x"]
    assert safe.blocked_images == 0


def test_relative_and_other_urls_are_dropped() -> None:
    safe = sanitize_html(
        '<img src="/webmail/logout"><img src="//evil.test/a.png"><img src="mailto:a@b.test">'
        '<a href="/webmail/settings">r</a><a href="#haut">h</a><a href="tel:+33123">t</a>',
        cid_url=cid_url,
    )

    assert "src=" not in safe.html
    assert "href=" not in safe.html
    assert safe.blocked_images == 0


# -- links, styles, structure -------------------------------------------------------------------


def test_links_open_elsewhere_without_referrer() -> None:
    safe = sanitize_html(
        '<a href="https://esante.gouv.fr/" target="_self" rel="opener">ANS</a>'
        '<a href="mailto:secretariat@cabinet.mssante.test">écrire</a>',
        cid_url=cid_url,
    )

    links = [dict(attrs) for tag, attrs in elements(safe.html) if tag == "a"]
    assert links == [
        {"href": "https://esante.gouv.fr/", "target": "_blank", "rel": "noopener noreferrer"},
        {
            "href": "mailto:secretariat@cabinet.mssante.test",
            "target": "_blank",
            "rel": "noopener noreferrer",
        },
    ]


def test_allowed_style_is_kept_and_dangerous_properties_dropped() -> None:
    safe = sanitize_html(
        '<p style="color: #c00; position: fixed; font-weight: bold; z-index: 99;'
        ' margin-left: 2em; border-top: 1px solid #000">x</p>'
        '<div style="background-color: yellow; background-image: none">y</div>'
        '<span style="color: red; background: url(https://t.test/p.gif)">z</span>',
        cid_url=cid_url,
    )

    assert safe.html == (
        '<p style="color:#c00;font-weight:bold;margin-left:2em;border-top:1px solid #000">x</p>'
        '<div style="background-color:yellow">y</div>'
        "<span>z</span>"
    )


def test_mail_document_keeps_its_body_only() -> None:
    document = (
        "<html><head><title>Lettre</title><style>p { color: red }</style>"
        '<meta charset="utf-8"></head><body bgcolor="#fff">'
        '<center><table border="0" cellpadding="4"><tr><td align="left" class="x" id="y">'
        '<font face="Arial" color="navy">Cher confrère,</font></td></tr></table></center>'
        "<!-- commentaire --><blockquote><pre>cité</pre></blockquote></body></html>"
    )

    safe = sanitize_html(document, cid_url=cid_url)

    assert safe.html == (
        '<center><table border="0" cellpadding="4"><tbody><tr><td align="left">'
        '<font face="Arial" color="navy">Cher confrère,</font></td></tr></tbody></table></center>'
        "<blockquote><pre>cité</pre></blockquote>"
    )


def test_text_is_escaped() -> None:
    safe = sanitize_html('<p>1 &lt; 2 &amp; 3 > 2 "ok"</p>', cid_url=cid_url)

    assert safe.html == '<p>1 &lt; 2 &amp; 3 &gt; 2 "ok"</p>'


# -- text_to_html -------------------------------------------------------------------------------


def test_text_to_html_escapes_and_wraps() -> None:
    html = text_to_html("Tension < 14 & pouls > 60\r\n<script>alert(1)</script>\n")

    assert html.startswith('<pre class="mail-text"')
    assert "white-space: pre-wrap" in html
    assert html.endswith("</pre>")
    assert "Tension &lt; 14 &amp; pouls &gt; 60\n&lt;script&gt;alert(1)&lt;/script&gt;\n" in html
    assert "<script" not in html


def test_text_to_html_links_urls() -> None:
    html = text_to_html(
        "Voir https://esante.gouv.fr/mssante?a=1&b=2. Et (http://x.test/doc) ou javascript:alert(1)"
    )

    links = [dict(attrs) for tag, attrs in elements(html) if tag == "a"]
    assert links == [
        {
            "href": "https://esante.gouv.fr/mssante?a=1&b=2",
            "rel": "noopener noreferrer",
            "target": "_blank",
        },
        {"href": "http://x.test/doc", "rel": "noopener noreferrer", "target": "_blank"},
    ]
    assert ">https://esante.gouv.fr/mssante?a=1&amp;b=2</a>. Et (" in html
    assert "</a>) ou javascript:alert(1)</pre>" in html


def test_text_to_html_cannot_break_out_of_an_attribute() -> None:
    html = text_to_html('https://x.test/"onmouseover="alert(1) https://y.test/\'a')

    for tag, attrs in elements(html):
        assert tag in ("pre", "a")
        assert all(not name.startswith("on") for name, _ in attrs)

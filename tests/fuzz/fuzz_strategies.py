"""Hypothesis strategies for what a hostile client sends: SMTP and IMAP command lines (with
literals), and MIME trees (depth, parts, transfer encodings, header folding).

Each strategy mixes well-formed pieces with the edges that broke servers before: CR, LF or NUL
inside a line, bytes that are not UTF-8, huge counts and sizes, unbalanced parentheses and
quotes, literals announced larger or smaller than what follows.
"""

from __future__ import annotations

from hypothesis import strategies as st

_NASTY = [b"", b"\x00", b"\r", b"\n", b"\r\n", b"\xff\xfe", b"\xc3(", b" ", b"\t", b'"', b"(", b")"]
_NASTY += [b"{", b"}", b"<", b">", b"%", b"*", b"\\", b"=?utf-8?b?", b"..", b"\x1b[0m"]

# Bytes a line may carry: mostly printable ASCII, some of the edges above, some long runs.
atoms = st.one_of(
    st.binary(min_size=0, max_size=40),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
        str.encode
    ),
    st.sampled_from(_NASTY),
    st.integers(0, 2**64).map(lambda n: str(n).encode()),
    st.builds(
        lambda c, n: c * n, st.sampled_from([b"A", b"(", b"[", b"\\", b"%"]), st.integers(1, 5000)
    ),
)
words = st.lists(atoms, max_size=6).map(b" ".join)

_STRANGER = "fuzz{}@b.mssante.test"  # never a real account: no login throttle on Martin


def _address(local: bytes) -> bytes:
    return b"<" + local + b"@b.mssante.test>"


smtp_verbs = st.sampled_from(
    [
        b"EHLO",
        b"HELO",
        b"MAIL FROM:",
        b"RCPT TO:",
        b"DATA",
        b"RSET",
        b"NOOP",
        b"VRFY",
        b"EXPN",
        b"HELP",
        b"AUTH",
        b"AUTH PLAIN",
        b"AUTH LOGIN",
        b"AUTH XOAUTH2",
        b"AUTH EXTERNAL",
        b"STARTTLS",
        b"BDAT",
        b"QUIT",
        b"ehlo",
        b"MAIL FROM:<>",
        b"XCLIENT",
        b"",
    ]
)
smtp_arguments = st.one_of(
    words,
    atoms.map(_address),
    st.builds(
        lambda a, p: _address(a) + b" " + p,
        atoms,
        st.sampled_from(
            [
                b"SIZE=1",
                b"SIZE=99999999999999999999",
                b"BODY=8BITMIME",
                b"SMTPUTF8",
                b"NOTIFY=NEVER",
                b"RET=HDRS",
                b"ENVID=\xff",
                b"SIZE=-1",
                b"AUTH=<>",
                b"X=" + b"y" * 3000,
            ]
        ),
    ),
)
smtp_line = st.builds(
    lambda v, a: (v + b" " + a).rstrip(b" ") + b"\r\n", smtp_verbs, smtp_arguments
)
smtp_session = st.lists(
    st.one_of(smtp_line, words.map(lambda w: w + b"\r\n")), min_size=1, max_size=12
)

imap_tags = st.one_of(st.sampled_from([b"a1", b"*", b"+", b"", b"x" * 200, b"a\xff"]), atoms)
imap_commands = st.sampled_from(
    [
        b"CAPABILITY",
        b"NOOP",
        b"LOGOUT",
        b"LOGIN",
        b"AUTHENTICATE PLAIN",
        b"AUTHENTICATE XOAUTH2",
        b"STARTTLS",
        b"SELECT",
        b"EXAMINE",
        b"CREATE",
        b"DELETE",
        b"RENAME",
        b"SUBSCRIBE",
        b"LIST",
        b"LSUB",
        b"STATUS",
        b"APPEND",
        b"CHECK",
        b"CLOSE",
        b"EXPUNGE",
        b"SEARCH",
        b"FETCH",
        b"STORE",
        b"COPY",
        b"MOVE",
        b"UID FETCH",
        b"UID SEARCH",
        b"UID STORE",
        b"UID EXPUNGE",
        b"IDLE",
        b"ENABLE",
        b"ID",
        b"NAMESPACE",
        b"GETQUOTAROOT",
        b"UNSELECT",
        b"DONE",
        b"XYZZY",
    ]
)
imap_arguments = st.one_of(
    words,
    st.sampled_from(
        [
            b"INBOX",
            b'"INBOX"',
            b"1:*",
            b"*",
            b"1,2,3:4",
            b"0",
            b"4294967296",
            b"(FLAGS)",
            b"(BODYSTRUCTURE ENVELOPE BODY.PEEK[] BODY[1.2.3.MIME] BINARY[1] RFC822.SIZE)",
            b"(BODY[HEADER.FIELDS (From To" + b" X" * 500 + b")])",
            b'TEXT "a"',
            b"OR OR OR",
            b"CHARSET UTF-8 TEXT \xc3\xa9",
            b"NOT NOT NOT NOT ALL",
            b"(" * 300 + b")" * 300,
            b'"" "*"',
            b'"" "%/%/%/%/%"',
            b"+FLAGS (\\Deleted)",
            b"INBOX (MESSAGES UIDNEXT)",
        ]
    ),
)


def _literal(body: bytes, announced: int, plus: bool) -> bytes:
    return b"{%d%s}\r\n" % (announced, b"+" if plus else b"") + body


imap_literal = st.builds(
    _literal,
    st.binary(max_size=300),
    st.one_of(st.integers(0, 400), st.sampled_from([10**9, 2**63, 26214400, 1025])),
    st.booleans(),
)
imap_line = st.builds(
    lambda tag, cmd, args, lit: (
        tag + b" " + cmd + b" " + args + (b" " + lit if lit else b"") + b"\r\n"
    ),
    imap_tags,
    imap_commands,
    imap_arguments,
    st.one_of(st.just(b""), imap_literal),
)
imap_session = st.lists(imap_line, min_size=1, max_size=10)

# -- MIME trees ---------------------------------------------------------------------------------
_ENCODINGS = [
    b"7bit",
    b"8bit",
    b"binary",
    b"base64",
    b"quoted-printable",
    b"x-uuencode",
    b"\xff",
    b"",
]
_TYPES = [
    b"text/plain",
    b"text/html",
    b"application/pdf",
    b"image/svg+xml",
    b"message/rfc822",
    b"application/octet-stream",
    b'text/plain; charset="x-unknown"',
    b"text/",
    b"/",
    b"application/x-xdm+zip",
]


def _fold(name: bytes, value: bytes, width: int) -> bytes:
    """A header field folded every ``width`` bytes (RFC 5322 §2.2.3), maybe badly."""
    if width <= 0:
        return name + b": " + value + b"\r\n"
    chunks = [value[i : i + width] for i in range(0, len(value), width)] or [b""]
    return name + b": " + b"\r\n ".join(chunks) + b"\r\n"


leaf = st.builds(
    lambda ctype, enc, body, fold: (
        _fold(b"Content-Type", ctype, fold)
        + b"Content-Transfer-Encoding: "
        + enc
        + b"\r\n\r\n"
        + body
        + b"\r\n"
    ),
    st.sampled_from(_TYPES),
    st.sampled_from(_ENCODINGS),
    st.one_of(st.binary(max_size=200), st.sampled_from([b"=?=", b"====", b"=\r\n", b"AAAA===="])),
    st.integers(-1, 12),
)


def _multipart(children: list[bytes], boundary: bytes, close: bool, preamble: bytes) -> bytes:
    head = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n' + preamble
    body = b"".join(b"\r\n--" + boundary + b"\r\n" + child for child in children)
    return head + body + (b"\r\n--" + boundary + b"--\r\n" if close else b"")


def trees(max_leaves: int = 40) -> st.SearchStrategy[bytes]:
    return st.recursive(
        leaf,
        lambda inner: st.builds(
            _multipart,
            st.lists(inner, min_size=0, max_size=4),
            st.sampled_from([b"b", b"b", b"", b"-", b"x" * 80, b"b\r\n", b"\xff"]),
            st.booleans(),
            st.sampled_from([b"", b"preamble\r\n", b"--b\r\n"]),
        ),
        max_leaves=max_leaves,
    )


def _message(tree: bytes, subject: bytes, fold: int, extra: bytes) -> bytes:
    head = (
        b"From: Dr Paul Durand <dr.durand@b.mssante.test>\r\nTo: <helene.martin@b.mssante.test>\r\n"
    )
    head += _fold(b"Subject", subject, fold) + b"Message-ID: <fuzz@t>\r\nMIME-Version: 1.0\r\n"
    return head + extra + tree


messages = st.builds(
    _message,
    trees(),
    st.one_of(atoms, st.just(b"=?utf-8?q?Compte_rendu_=C3=A9?=")),
    st.integers(-1, 20),
    st.sampled_from(
        [b"", b"Content-Type: text/plain\r\n", b"X-Dup: 1\r\nX-Dup: 2\r\n", b" folded first\r\n"]
    ),
)

"""Reading stored messages: headers, bodies, attachments, part numbers, quoting (mail/reading.py)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mssante.mail.reading import (
    Attachment,
    MessageView,
    attachment_bytes,
    parse_message,
    quote_for_reply,
)

HELENE = "Hélène Martin <helene.martin@hopital-nord.mssante.test>"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 2


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def plain_message() -> bytes:
    return crlf(
        "Return-Path: <helene.martin@hopital-nord.mssante.test>\n"
        "From: =?utf-8?q?H=C3=A9l=C3=A8ne_Martin?= <helene.martin@hopital-nord.mssante.test>\n"
        "To: =?utf-8?b?Sm9zw6kgRHVwb250?= <jose.dupont@cabinet.mssante.test>,\n"
        " secretariat@cabinet.mssante.test\n"
        'Cc: "Dr. Durand, Paul" <paul.durand@clinique.mssante.test>\n'
        "Reply-To: Service de cardiologie <cardio@hopital-nord.mssante.test>\n"
        "Subject: =?utf-8?q?Compte-rendu_op=C3=A9ratoire?= de M. X\n"
        "Date: Mon, 03 Mar 2025 14:05:09 +0100\n"
        "Message-ID: <cr-42@hopital-nord.mssante.test>\n"
        "In-Reply-To: <demande-7@cabinet.mssante.test>\n"
        "References: <demande-6@cabinet.mssante.test>\n"
        "  <demande-7@cabinet.mssante.test>\n"
        "Disposition-Notification-To: helene.martin@hopital-nord.mssante.test\n"
        "X-MSS-INS: 1840675123456 78\n"
        "X-Mss-Nil: logiciel-hopital\n"
        "X-MSS-CODECDA: 11488-4\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
        "Bonjour,\n"
        "\n"
        "Le patient a =C3=A9t=C3=A9 op=C3=A9r=C3=A9 ce matin.\n"
        "> question pr=C3=A9c=C3=A9dente\n"
        "Cordialement\n"
    )


def alternative_message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = HELENE
    msg["To"] = "jose.dupont@cabinet.mssante.test"
    msg["Subject"] = "Résultats"
    msg.set_content("Résultats en pièce jointe.\n")
    msg.add_alternative("<p>Résultats en <b>pièce jointe</b>.</p>\n", subtype="html")
    return msg


# -- headers and bodies -----------------------------------------------------------------------


def test_plain_text_message_headers_are_decoded() -> None:
    view = parse_message(plain_message())

    assert view.subject == "Compte-rendu opératoire de M. X"
    assert view.from_ == HELENE
    assert view.to == (
        "José Dupont <jose.dupont@cabinet.mssante.test>",
        "secretariat@cabinet.mssante.test",
    )
    assert view.cc == ('"Dr. Durand, Paul" <paul.durand@clinique.mssante.test>',)
    assert view.reply_to == ("Service de cardiologie <cardio@hopital-nord.mssante.test>",)
    assert view.date == datetime(2025, 3, 3, 14, 5, 9, tzinfo=timezone(timedelta(hours=1)))
    assert view.message_id == "<cr-42@hopital-nord.mssante.test>"
    assert view.in_reply_to == "<demande-7@cabinet.mssante.test>"
    assert view.references == "<demande-6@cabinet.mssante.test> <demande-7@cabinet.mssante.test>"
    assert view.disposition_notification_to == "helene.martin@hopital-nord.mssante.test"
    assert view.return_path == "<helene.martin@hopital-nord.mssante.test>"
    assert view.mss_headers == {
        "X-MSS-INS": "1840675123456 78",
        "X-MSS-NIL": "logiciel-hopital",
        "X-MSS-CODECDA": "11488-4",
    }
    assert view.is_report is False


def test_plain_text_body_is_decoded_with_its_charset() -> None:
    view = parse_message(plain_message())

    assert view.text is not None
    assert "Le patient a été opéré ce matin.\n" in view.text
    assert "\r" not in view.text
    assert view.html is None
    assert view.attachments == ()


def test_multipart_alternative_gives_both_bodies_and_no_attachment() -> None:
    view = parse_message(alternative_message().as_bytes())

    assert view.text == "Résultats en pièce jointe.\n"
    assert view.html is not None
    assert "<b>pièce jointe</b>" in view.html
    assert view.attachments == ()


def test_html_only_message() -> None:
    msg = EmailMessage()
    msg["Subject"] = "Lettre"
    msg.set_content("<p>Chère consœur,</p><script>x()</script>", subtype="html")

    view = parse_message(msg.as_bytes())

    assert view.text is None
    assert view.html == "<p>Chère consœur,</p><script>x()</script>\n"  # raw: the caller sanitises


def test_non_multipart_attachment_is_part_1() -> None:
    msg = EmailMessage()
    msg.set_content(PDF, maintype="application", subtype="pdf", filename="cr.pdf")

    view = parse_message(msg.as_bytes())

    assert view.text is None
    assert view.attachments == (Attachment("1", "cr.pdf", "application/pdf", len(PDF), "", False),)


# -- attachments --------------------------------------------------------------------------------


def french_attachments_message() -> bytes:
    return crlf(
        "From: helene.martin@hopital-nord.mssante.test\n"
        "Subject: pieces\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="=-b1"\n'
        "\n"
        "--=-b1\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "Voir les pièces jointes.\n"
        "--=-b1\n"
        "Content-Type: application/pdf\n"
        "Content-Disposition: attachment;\n"
        " filename*=utf-8''compte-rendu%20op%C3%A9ratoire.pdf\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        "JVBERi0xLjcKw6k=\n"
        "--=-b1\n"
        "Content-Type: text/plain; charset=iso-8859-1\n"
        "Content-Disposition: attachment;\n"
        " filename*0*=iso-8859-1''r%E9sum%E9;\n"
        ' filename*1=" d\'hospitalisation.txt"\n'
        "\n"
        "texte\n"
        "--=-b1\n"
        'Content-Type: application/vnd.oasis.opendocument.text; name="=?utf-8?q?lettre_=C3=A9t=C3=A9.odt?="\n'
        "Content-Disposition: attachment\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        "UEsDBA==\n"
        "--=-b1\n"
        "Content-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename="../../etc/\u202egnp.exe"\n'
        "\n"
        "MZ\n"
        "--=-b1\n"
        "Content-Type: image/jpeg\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        "/9j/4A==\n"
        "--=-b1--\n"
    )


def test_attachment_filenames_rfc2231_and_rfc2047_are_decoded() -> None:
    view = parse_message(french_attachments_message())

    assert view.text == "Voir les pièces jointes."
    names = [(a.part_id, a.filename, a.content_type) for a in view.attachments]
    assert names == [
        ("2", "compte-rendu opératoire.pdf", "application/pdf"),
        ("3", "résumé d'hospitalisation.txt", "text/plain"),
        ("4", "lettre été.odt", "application/vnd.oasis.opendocument.text"),
        ("5", "gnp.exe", "application/octet-stream"),  # no directory, no RIGHT-TO-LEFT OVERRIDE
        ("6", "piece-jointe.jpg", "image/jpeg"),  # no name at all: one is made from the type
    ]
    assert view.attachments[0].size == len(b"%PDF-1.7\n\xc3\xa9")
    assert not any(a.inline for a in view.attachments)


def test_inline_cid_image_in_multipart_related() -> None:
    msg = EmailMessage()
    msg["Subject"] = "Logo"
    msg.set_content("Le logo.\n")
    msg.add_alternative('<p>Le logo : <img src="cid:logo@hopital"></p>\n', subtype="html")
    html_part = list(msg.iter_parts())[1]
    html_part.add_related(PNG, maintype="image", subtype="png", cid="<logo@hopital>")

    view = parse_message(msg.as_bytes())

    assert view.text == "Le logo.\n"
    assert view.html is not None
    assert "cid:logo@hopital" in view.html
    (image,) = view.attachments
    assert image.part_id == "2.2"
    assert image.content_id == "logo@hopital"
    assert image.inline is True
    assert image.content_type == "image/png"
    assert image.filename == "piece-jointe.png"
    assert image.size == len(PNG)


def test_cid_part_with_attachment_disposition_is_not_inline() -> None:
    msg = EmailMessage()
    msg.set_content("x\n")
    msg.add_attachment(PNG, maintype="image", subtype="png", filename="scan.png")
    list(msg.iter_parts())[1]["Content-ID"] = "<scan@x>"

    (image,) = parse_message(msg.as_bytes()).attachments

    assert (image.content_id, image.inline) == ("scan@x", False)


def test_mixed_nested_inside_alternative() -> None:
    """Apple Mail: alternative(text/plain, mixed(text/html, application/pdf))."""
    raw = crlf(
        "Subject: imbrique\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="alt"\n'
        "\n"
        "--alt\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "version texte\n"
        "--alt\n"
        'Content-Type: multipart/mixed; boundary="mix"\n'
        "\n"
        "--mix\n"
        "Content-Type: text/html; charset=utf-8\n"
        "\n"
        "<p>version html</p>\n"
        "--mix\n"
        'Content-Type: application/pdf; name="ordonnance.pdf"\n'
        'Content-Disposition: inline; filename="ordonnance.pdf"\n'
        "Content-Transfer-Encoding: base64\n"
        "\n"
        "JVBERg==\n"
        "--mix--\n"
        "--alt--\n"
    )

    view = parse_message(raw)

    assert view.text == "version texte"  # the CRLF before a boundary is the boundary's
    assert view.html == "<p>version html</p>"
    assert [(a.part_id, a.filename) for a in view.attachments] == [("2.2", "ordonnance.pdf")]


def test_extra_alternatives_are_dropped_but_a_calendar_is_kept() -> None:
    msg = EmailMessage()
    msg.set_content("texte\n")
    msg.add_alternative("<p>html</p>\n", subtype="html")
    msg.add_alternative("autre texte\n")
    msg.add_alternative("BEGIN:VCALENDAR\nEND:VCALENDAR\n", subtype="calendar")

    view = parse_message(msg.as_bytes())

    assert view.text == "texte\n"
    assert [(a.part_id, a.content_type) for a in view.attachments] == [("4", "text/calendar")]


def test_second_text_part_of_a_mixed_message_is_an_attachment() -> None:
    msg = EmailMessage()
    msg.set_content("corps\n")
    msg.add_attachment("pied de page\n")

    view = parse_message(msg.as_bytes())

    assert view.text == "corps\n"
    assert [(a.part_id, a.filename) for a in view.attachments] == [("2", "piece-jointe.txt")]


def forwarded_message() -> bytes:
    inner = EmailMessage()
    inner["From"] = HELENE
    inner["Subject"] = "Résultats d'analyse / urgent"
    inner.set_content("Les résultats.\n")
    outer = EmailMessage()
    outer["Subject"] = "Fwd: résultats"
    outer.set_content("Je vous transfère ce message.\n")
    outer.add_attachment(inner)
    return outer.as_bytes()


def test_message_rfc822_part_is_an_eml_attachment_named_after_its_subject() -> None:
    view = parse_message(forwarded_message())

    assert view.text == "Je vous transfère ce message.\n"
    (forwarded,) = view.attachments
    assert forwarded.part_id == "2"
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == "Résultats d'analyse _ urgent.eml"

    found = attachment_bytes(forwarded_message(), "2")
    assert found is not None
    attachment, data = found
    assert attachment == forwarded
    assert len(data) == forwarded.size
    inner = parse_message(data)
    assert inner.subject == "Résultats d'analyse / urgent"
    assert inner.from_ == HELENE
    assert inner.text == "Les résultats.\n"


def test_multipart_report_is_a_report() -> None:
    raw = crlf(
        "From: MAILER-DAEMON@mssante.test\n"
        "Subject: Non remis\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n'
        "\n"
        "--r\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "Votre message n'a pas pu être remis.\n"
        "--r\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.mssante.test\n"
        "\n"
        "Final-Recipient: rfc822; absent@mssante.test\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "\n"
        "--r\n"
        "Content-Type: text/rfc822-headers\n"
        "\n"
        "Subject: original\n"
        "--r--\n"
    )

    view = parse_message(raw)

    assert view.is_report is True
    assert view.text == "Votre message n'a pas pu être remis."
    kinds = [(a.part_id, a.content_type, a.filename) for a in view.attachments]
    assert kinds == [
        ("2", "message/delivery-status", "piece-jointe.txt"),
        ("3", "text/rfc822-headers", "piece-jointe.txt"),
    ]
    found = attachment_bytes(raw, "2")
    assert found is not None
    assert b"Status: 5.1.1" in found[1]


# -- broken mail --------------------------------------------------------------------------------


def test_broken_message_does_not_raise() -> None:
    raw = (
        b"From: \xc3\x89lodie <elodie@x.mssante.test>\r\n"
        b"To: Ren\xe9 <rene@y.mssante.test>\r\n"
        b"Subject: r\xc3\xa9sultats \xe9\r\n"
        b"Date: demain matin\r\n"
        b'Content-Type: multipart/mixed; boundary="cut"\r\n'
        b"\r\n"
        b"--cut\r\n"
        b"Content-Type: text/plain; charset=x-unknown\r\n"
        b"\r\n"
        b"caf\xc3\xa9 cr\xe8me\r\n"
        b"--cut\r\n"
        b'Content-Type: application/pdf; name="tronqu\xc3\xa9.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"JVBERi0xLj"
    )

    view = parse_message(raw)

    assert view.from_ == "Élodie <elodie@x.mssante.test>"  # raw UTF-8 (RFC 6532)
    assert view.to == ("René <rene@y.mssante.test>",)  # raw Latin-1, read as Windows-1252
    assert view.subject.startswith("résultats")
    assert view.date is None
    assert view.text == "cafÃ© crème"  # unknown charset, not UTF-8: read as Windows-1252
    assert [(a.part_id, a.filename) for a in view.attachments] == [("2", "tronqué.pdf")]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Subject: only a header",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
        b"Content-Type: text/plain; charset=base64\r\n\r\nSGVsbG8=\r\n",
        b"Content-Type: text/plain; charset*=x''\r\nContent-Disposition: attachment; filename*=zz'\r\n\r\nx",
        b'From: <<<@@@>>>, "unclosed\r\nTo: ;;;,,,:\r\nDate: Mon, 99 Foo 2025 99:99:99 +9999\r\n\r\nx',
        b"Content-Type: message/rfc822\r\n\r\nnot: really\r\n\r\nbody",
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!",
        b"Content-Type: multipart/alternative; boundary=a\r\n\r\n"
        + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 200,
    ],
)
def test_malformed_input_never_raises(raw: bytes) -> None:
    view = parse_message(raw)

    assert isinstance(view, MessageView)
    quote_for_reply(view)
    for attachment in view.attachments:
        assert attachment.filename
        assert "/" not in attachment.filename
        found = attachment_bytes(raw, attachment.part_id)
        assert found is not None
        assert found[0] == attachment


def test_multipart_without_boundary_is_shown_as_text() -> None:
    view = parse_message(b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n")

    assert view.text == "no boundary at all\n"


@settings(max_examples=150, deadline=None, database=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    parse_message(raw)
    attachment_bytes(raw, "1")


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(max_size=300))
def test_arbitrary_text_after_a_header_never_raises(text: str) -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + text.encode("utf-8")
    view = parse_message(raw)
    quote_for_reply(view)


# -- attachment_bytes ---------------------------------------------------------------------------


def test_attachment_bytes_round_trip() -> None:
    msg = EmailMessage()
    msg.set_content("voir pièce jointe\n")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="bilan sanguin.pdf")
    msg.add_attachment(PNG, maintype="image", subtype="png", filename="radio.png")
    raw = msg.as_bytes()

    view = parse_message(raw)
    first = attachment_bytes(raw, "2")
    second = attachment_bytes(raw, "3")

    assert first == (view.attachments[0], PDF)
    assert second == (view.attachments[1], PNG)
    assert view.attachments[0].size == len(PDF)
    assert view.attachments[0].filename == "bilan sanguin.pdf"


@pytest.mark.parametrize("part_id", ["4", "1", "2.1", "0", "", "abc", "1..2", "2.", "-1", " 2"])
def test_attachment_bytes_unknown_part_is_none(part_id: str) -> None:
    msg = EmailMessage()
    msg.set_content("corps\n")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="a.pdf")
    msg.add_attachment(PNG, maintype="image", subtype="png", filename="b.png")

    assert attachment_bytes(msg.as_bytes(), part_id) is None


# -- quoting ------------------------------------------------------------------------------------


def test_quote_for_reply_text() -> None:
    quoted = quote_for_reply(parse_message(plain_message()))

    assert quoted == (
        "Le 3 mars 2025 à 14:05, " + HELENE + " a écrit :\n"
        "> Bonjour,\n"
        ">\n"
        "> Le patient a été opéré ce matin.\n"
        ">> question précédente\n"
        "> Cordialement\n"
    )


def test_quote_for_reply_html_only_is_turned_into_text() -> None:
    view = MessageView(
        subject="",
        from_="cardio@hopital-nord.mssante.test",
        to=(),
        cc=(),
        reply_to=(),
        date=datetime(2025, 8, 1, 9, 3, tzinfo=UTC),
        message_id="",
        in_reply_to="",
        references="",
        text=None,
        html=(
            "<html><head><title>titre</title><style>p{color:red}</style></head><body>\n"
            "<p>Chère  consœur,</p>\n<p>Tension : 12 &lt; 14 &amp; pouls&nbsp;70<br>"
            "à revoir</p><script>alert(1)</script><ul><li>un</li><li>deux</li></ul></body></html>"
        ),
        attachments=(),
        disposition_notification_to="",
        return_path="",
        mss_headers={},
        is_report=False,
    )

    quoted = quote_for_reply(view)

    assert quoted == (
        "Le 1 août 2025 à 09:03, cardio@hopital-nord.mssante.test a écrit :\n"
        "> Chère consœur,\n"
        ">\n"
        "> Tension : 12 < 14 & pouls 70\n"
        "> à revoir\n"
        ">\n"
        "> un\n"
        "> deux\n"
    )


def test_quote_for_reply_without_date() -> None:
    msg = email.message_from_bytes(b"From: a@b.test\r\n\r\nligne\r\n", policy=email.policy.default)

    quoted = quote_for_reply(parse_message(msg.as_bytes()))

    assert quoted == "a@b.test a écrit :\n> ligne\n"

"""The webmail's words, French first, English available (docs/webmail.md).

A small catalogue, written here rather than with gettext: a few hundred strings in two languages,
reviewed side by side. The language is the session's choice, else the ``lang`` cookie, else the
browser's ``Accept-Language`` (RFC 9110 §12.5.4), else French.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

LANGUAGES = ("fr", "en")

# key: (français, English)
_WORDS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "app": ("Messagerie sécurisée de santé", "Secure health mail"),
        "login.title": ("Connexion", "Log in"),
        "login.address": ("Adresse MSSanté", "MSSanté address"),
        "login.password": ("Mot de passe", "Password"),
        "login.submit": ("Se connecter", "Log in"),
        "login.failed": (
            "Adresse ou mot de passe incorrect.",
            "Wrong address or password.",
        ),
        "login.throttled": (
            "Trop de tentatives. Patientez une minute avant de réessayer.",
            "Too many attempts. Wait a minute before trying again.",
        ),
        "login.oidc": ("Se connecter avec Pro Santé Connect", "Log in with Pro Santé Connect"),
        "login.certificate": ("Se connecter avec ma carte CPS", "Log in with my CPS card"),
        "login.no_certificate": (
            "Aucune carte reconnue : le navigateur n'a présenté aucun certificat valide.",
            "No card recognised: the browser presented no valid certificate.",
        ),
        "login.expired": (
            "Votre session a expiré. Reconnectez-vous.",
            "Your session has ended. Please log in again.",
        ),
        "totp.title": ("Code à usage unique", "One-time code"),
        "totp.code": ("Code à 6 chiffres", "6-digit code"),
        "totp.help": (
            "Saisissez le code affiché par votre application d'authentification.",
            "Enter the code shown by your authenticator app.",
        ),
        "totp.failed": ("Ce code n'est pas valide.", "This code is not valid."),
        "totp.submit": ("Valider", "Confirm"),
        "enrol.title": ("Protégez votre compte", "Protect your account"),
        "enrol.help": (
            "La messagerie demande un second facteur. Scannez ce QR code avec une application "
            "d'authentification (FreeOTP, Google Authenticator…), puis saisissez le code affiché.",
            "The webmail needs a second factor. Scan this QR code with an authenticator app "
            "(FreeOTP, Google Authenticator…), then enter the code it shows.",
        ),
        "enrol.secret": ("Ou saisissez cette clé :", "Or type this key:"),
        "nav.mail": ("Messages", "Mail"),
        "nav.compose": ("Nouveau message", "New message"),
        "nav.account": ("Mon compte", "My account"),
        "nav.logout": ("Se déconnecter", "Log out"),
        "nav.skip": ("Aller au contenu", "Skip to content"),
        "nav.language": ("English", "Français"),
        "folder.INBOX": ("Boîte de réception", "Inbox"),
        "folder.Sent": ("Envoyés", "Sent"),
        "folder.Drafts": ("Brouillons", "Drafts"),
        "folder.Trash": ("Corbeille", "Trash"),
        "folder.Archive": ("Archives", "Archive"),
        "folder.Junk": ("Indésirables", "Junk"),
        "list.empty": ("Aucun message.", "No messages."),
        "list.older": ("Messages plus anciens", "Older messages"),
        "list.newer": ("Messages plus récents", "Newer messages"),
        "list.from": ("De", "From"),
        "list.to": ("À", "To"),
        "list.subject": ("Objet", "Subject"),
        "list.date": ("Date", "Date"),
        "list.new_mail": ("Nouveaux messages : actualiser", "New mail: refresh"),
        "list.no_subject": ("(sans objet)", "(no subject)"),
        "search.label": ("Rechercher", "Search"),
        "search.placeholder": ("Objet ou expéditeur", "Subject or sender"),
        "read.reply": ("Répondre", "Reply"),
        "read.reply_all": ("Répondre à tous", "Reply all"),
        "read.forward": ("Transférer", "Forward"),
        "read.delete": ("Supprimer", "Delete"),
        "read.move": ("Déplacer vers", "Move to"),
        "read.flag": ("Suivre", "Flag"),
        "read.unflag": ("Ne plus suivre", "Unflag"),
        "read.unread": ("Marquer non lu", "Mark unread"),
        "read.attachments": ("Pièces jointes", "Attachments"),
        "read.images_blocked": (
            "Images distantes bloquées pour votre sécurité.",
            "Remote images blocked for your safety.",
        ),
        "read.show_images": ("Afficher les images", "Show images"),
        "read.receipt_asked": (
            "L'expéditeur demande un accusé de lecture.",
            "The sender asks for a read receipt.",
        ),
        "read.receipt_send": ("Envoyer l'accusé de lecture", "Send the read receipt"),
        "read.receipt_sent": ("Accusé de lecture envoyé.", "Read receipt sent."),
        "read.patient": ("Message concernant un patient", "Message about a patient"),
        "read.status": ("Suivi des destinataires", "Recipients' status"),
        "status.pending": ("en cours", "pending"),
        "status.delivered": ("distribué", "delivered"),
        "status.delayed": ("retardé", "delayed"),
        "status.failed": ("échec", "failed"),
        "status.read": ("lu", "read"),
        "compose.title": ("Nouveau message", "New message"),
        "compose.from": ("De", "From"),
        "compose.to": ("À", "To"),
        "compose.cc": ("Copie", "Cc"),
        "compose.subject": ("Objet", "Subject"),
        "compose.body": ("Message", "Message"),
        "compose.attachments": ("Pièces jointes", "Attachments"),
        "compose.send": ("Envoyer", "Send"),
        "compose.save": ("Enregistrer le brouillon", "Save draft"),
        "compose.receipt": ("Demander un accusé de lecture", "Ask for a read receipt"),
        "compose.sent": ("Message envoyé.", "Message sent."),
        "compose.saved": ("Brouillon enregistré.", "Draft saved."),
        "compose.outside": (
            "hors de l'espace de confiance MSSanté : ce destinataire ne recevra pas le message.",
            "outside the MSSanté trust space: this recipient will not get the message.",
        ),
        "compose.too_large": (
            "Le message dépasse la taille autorisée.",
            "The message is larger than allowed.",
        ),
        "compose.no_recipient": ("Indiquez au moins un destinataire.", "Add a recipient."),
        "patient.option": ("Message concernant un patient", "Message about a patient"),
        "patient.ins": ("INS (matricule NIR ou NIA, 15 caractères)", "INS (NIR or NIA, 15 chars)"),
        "patient.ins_kind": ("Type d'INS", "INS type"),
        "patient.family_name": ("Nom de naissance", "Birth name"),
        "patient.given_names": ("Prénom(s)", "Given name(s)"),
        "patient.birth_date": ("Date de naissance", "Birth date"),
        "patient.sex": ("Sexe", "Sex"),
        "patient.document": ("Libellé du document", "Document title"),
        "account.title": ("Mon compte", "My account"),
        "account.password": ("Changer le mot de passe", "Change password"),
        "account.current_password": ("Mot de passe actuel", "Current password"),
        "account.new_password": (
            "Nouveau mot de passe (12 caractères ou plus)",
            "New password (12 characters or more)",
        ),
        "account.confirm_password": ("Nouveau mot de passe, à nouveau", "New password, again"),
        "account.weak": (
            "Mot de passe refusé : 12 caractères au moins, sans espace au début ni à la fin.",
            "Password refused: 12 characters or more, no space at either end.",
        ),
        "account.mismatch": ("Les deux mots de passe diffèrent.", "The two passwords differ."),
        "account.password_changed": (
            "Mot de passe changé ; vos autres sessions sont fermées.",
            "Password changed; your other sessions are closed.",
        ),
        "account.totp": ("Second facteur (TOTP)", "Second factor (TOTP)"),
        "account.totp_on": ("Actif", "Active"),
        "account.totp_off": ("Aucun appareil", "No device"),
        "account.totp_new": ("Enregistrer un nouvel appareil", "Enrol a new device"),
        "account.app_passwords": (
            "Mots de passe d'application (Thunderbird, téléphone…)",
            "App passwords (Thunderbird, phone…)",
        ),
        "account.app_label": ("Nom de l'appareil", "Device name"),
        "account.app_add": ("Créer", "Create"),
        "account.app_new": (
            "Copiez ce mot de passe maintenant : il ne sera plus affiché.",
            "Copy this password now: it will not be shown again.",
        ),
        "account.revoke": ("Révoquer", "Revoke"),
        "account.sessions": ("Sessions ouvertes", "Open sessions"),
        "account.this_session": ("cette session", "this session"),
        "account.logout_all": ("Se déconnecter partout", "Log out everywhere"),
        "account.mailboxes": ("Boîtes partagées", "Shared mailboxes"),
        "account.switch": ("Ouvrir", "Open"),
        "account.none": ("Aucune.", "None."),
        "error.title": ("Erreur", "Error"),
        "error.not_found": ("Message ou dossier introuvable.", "Message or folder not found."),
        "error.csrf": (
            "La page a expiré. Rechargez-la et recommencez.",
            "The page has expired. Reload it and try again.",
        ),
        "error.back": ("Retour à la boîte de réception", "Back to the inbox"),
    }
)


Translator = Callable[[str], str]


def translator(language: str) -> Translator:
    index = 1 if language == "en" else 0

    def translate(key: str) -> str:
        words = _WORDS.get(key)
        return words[index] if words else key

    return translate


def choose(session_choice: str, cookie: str | None, accept_language: str | None) -> str:
    """The language of a request: the session's, the cookie's, then the browser's first
    supported preference (q-values honoured), French by default."""
    for candidate in (session_choice, cookie or ""):
        if candidate in LANGUAGES:
            return candidate
    return _from_accept(accept_language or "")


def _from_accept(header: str) -> str:
    ranked: list[tuple[float, str]] = []
    for item in header.split(",")[:20]:
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((quality, tag.strip().lower()[:2]))
    for _quality, tag in sorted(ranked, key=lambda r: -r[0]):
        if tag in LANGUAGES:
            return tag
    return "fr"


def folder_label(translate: Translator, name: str) -> str:
    """The French (or English) name of a standard folder; another folder keeps its own name."""
    label = translate(f"folder.{name}")
    return name if label == f"folder.{name}" else label

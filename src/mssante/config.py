"""Typed configuration: a TOML file, then ``MSSANTE_*`` environment variables over it.

Nothing reads configuration from a global: :func:`load_settings` builds a :class:`Settings`
object and the caller passes it (or the part it needs) down. Every field carries a description;
``mssante config sample`` prints them as an annotated TOML file.

Environment overrides use ``MSSANTE_`` then the section and field joined by ``__``, for example
``MSSANTE_DATABASE__URL=postgresql+psycopg://postgres@127.0.0.1/test``.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mssante.errors import ConfigError


class Role(StrEnum):
    OPERATOR = "operator"
    AUTHORITY = "authority"


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


class DatabaseSettings(BaseModel):
    url: str = Field(
        "",
        description=(
            "SQLAlchemy URL of the metadata database. Empty: SQLite in data_dir/mssante.db "
            "(WAL mode). For scale: postgresql+psycopg://user@host:5432/dbname"
        ),
    )
    schema_name: str = Field(
        "",
        description="PostgreSQL schema to use (search_path); empty for the database's default",
    )
    echo: bool = Field(False, description="Log every SQL statement (debugging only)")


class BlobSettings(BaseModel):
    path: Path | None = Field(
        None,
        description="Folder of the content-addressed message store. Empty: data_dir/blobs",
    )


class LogSettings(BaseModel):
    level: str = Field("INFO", description="Lowest level logged: DEBUG, INFO, WARNING, ERROR")
    format: LogFormat = Field(
        LogFormat.CONSOLE, description="console (for people) or json (one object per line)"
    )


class PkiSettings(BaseModel):
    trust_anchors: list[Path] = Field(
        default_factory=list,
        description="PEM files of the root certificates trusted (IGC-Santé roots, or the test PKI's)",
    )
    intermediates: list[Path] = Field(
        default_factory=list,
        description="PEM files of intermediate CA certificates used to build chains",
    )
    crl_sources: list[str] = Field(
        default_factory=list,
        description="CRLs to check revocation against: file paths or http(s) URLs",
    )
    crl_cache_dir: Path | None = Field(
        None,
        description="Where the last valid CRLs are kept. Empty: data_dir/crl",
    )
    require_revocation_check: bool = Field(
        True,
        description="Refuse a certificate whose issuer has no valid CRL at hand",
    )
    crl_refresh_seconds: float = Field(
        3600.0,
        gt=0,
        description="Seconds between CRL refreshes (also at each CRL's nextUpdate), on their "
        "own clock, not the whitelist's; sessions of a certificate now revoked then end",
    )


class TlsSettings(BaseModel):
    certificate: Path | None = Field(
        None, description="PEM certificate this node presents (server and client side)"
    )
    key: Path | None = Field(None, description="PEM private key of that certificate")
    chain: Path | None = Field(None, description="PEM intermediate certificates sent along with it")
    read_buffer_bytes: int = Field(
        16384,
        ge=4096,
        le=262144,
        description="Read buffer of each TLS connection (asyncio's is 256 KiB; 16 KiB, one TLS "
        "record, keeps an idle IMAP connection small)",
    )


class WhitelistSettings(BaseModel):
    url: str = Field(
        "",
        description="Where the authority publishes the whitelist (https URL); its detached "
        "signature is fetched from the same URL with '.p7s' appended",
    )
    signer_dn: str = Field(
        "",
        description="If set, the signer certificate's subject DN must equal this (RFC 4514)",
    )
    refresh_seconds: int = Field(
        86400, ge=60, description="How often the whitelist is fetched again (default: daily)"
    )
    max_bytes: int = Field(
        50_000_000, ge=1024, description="A whitelist larger than this is refused"
    )
    cache_dir: Path | None = Field(
        None,
        description="Where the last good list and its signature are kept. Empty: data_dir/whitelist",
    )


class OperatorSettings(BaseModel):
    name: str = Field("", description="The operator's organisation name")
    structure_id: str = Field("", description="Its IdNatStruct, e.g. 341459958900028")
    domains: list[str] = Field(
        default_factory=list, description="Mail domains this operator serves"
    )


class SmtpSettings(BaseModel):
    hostname: str = Field(
        "",
        description="This MTA's host name (EHLO, Received). Empty: the first operator domain's smtp.<domain>",
    )
    listen_host: str = Field("127.0.0.1", description="Address the SMTP listeners bind")
    inbound_port: int = Field(
        25, ge=0, le=65535, description="SMTP from other operators (STARTTLS required)"
    )
    submission_port: int = Field(
        587, ge=0, le=65535, description="Submission with STARTTLS (RFC 6409)"
    )
    submissions_port: int = Field(
        465, ge=0, le=65535, description="Submission over implicit TLS (RFC 8314)"
    )
    max_message_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="Largest message accepted (SIZE, RFC 1870)"
    )
    max_recipients: int = Field(100, ge=1, description="Most recipients in one transaction")
    max_connections: int = Field(
        1000, ge=1, description="Open connections one SMTP listener serves at most; beyond, 421"
    )
    max_connections_per_address: int = Field(
        20,
        ge=1,
        description="Connections one client address may hold open on an SMTP listener before "
        "it has logged in (submission) or at all (inbound); beyond, 421",
    )
    max_sessions_per_user_address: int = Field(
        10,
        ge=1,
        description="Submission: logged-in sessions one account may hold from one address "
        "(users behind one NAT each have their own)",
    )
    max_refused_commands: int = Field(
        20,
        ge=1,
        description="Refused commands in one session (unknown recipients, syntax) after which "
        "it is closed with 421, as Postfix's smtpd_hard_error_limit",
    )
    max_messages_per_hour: int = Field(
        10_000,
        ge=1,
        description="Messages one sending mailbox may hand in per hour, at most this many at "
        "once (every door: submission, webmail, API); beyond it a temporary refusal. Generous "
        "for software (an APP mailbox sending results); it stops a stolen account's flood",
    )
    software_reference: str = Field(
        "mssante",
        min_length=1,
        max_length=100,
        description="X-MSS-NIL stamped on our users' mail that names no sending software",
    )
    command_timeout: float = Field(
        300.0, gt=0, description="Seconds a client may stay silent between commands"
    )
    data_timeout: float = Field(600.0, gt=0, description="Seconds a client may take to send DATA")
    routes: dict[str, str] = Field(
        default_factory=dict,
        description="Static routes, domain -> host:port, tried before DNS MX (local trust spaces, tests)",
    )
    retry_schedule: list[int] = Field(
        default_factory=lambda: [60, 300, 900, 1800, 3600, 7200, 14400],
        description="Seconds to wait before each new delivery attempt; the last repeats",
    )
    delay_notice_after: int = Field(
        4 * 3600, ge=0, description="Seconds after which the sender is told a message is delayed"
    )
    give_up_after: int = Field(
        5 * 86400, ge=60, description="Seconds after which delivery fails and a DSN is sent"
    )
    delivery_workers: int = Field(16, ge=1, description="Concurrent outbound connections at most")
    connections_per_domain: int = Field(
        8, ge=1, description="Concurrent outbound connections to one destination domain at most"
    )
    connect_timeout: float = Field(30.0, gt=0, description="Seconds to open an outbound connection")


class WebSettings(BaseModel):
    listen_host: str = Field("127.0.0.1", description="Address the operator's HTTPS listener binds")
    port: int = Field(
        0,
        ge=0,
        le=65535,
        description="HTTPS port serving the webmail, mail-client autoconfiguration and the "
        "directory search; 0 disables it. In production: 443, behind autoconfig.<domain> and "
        "<domain>",
    )
    idle_timeout: float = Field(
        1800.0, gt=0, description="Seconds without a request after which a webmail session ends"
    )
    max_session_age: float = Field(
        43200.0, gt=0, description="Seconds after which a webmail session ends, used or not"
    )
    require_second_factor: bool = Field(
        True,
        description="A password alone does not open the webmail: a TOTP code is asked, and an "
        "account without a device enrols one at its first login (BRIEF §5)",
    )
    page_size: int = Field(50, ge=10, le=500, description="Messages per page of a folder")
    client_certificates: bool = Field(
        True,
        description="Ask the browser for a CPS-like certificate (TLS client authentication, "
        "optional) so that a card holder logs in without a password",
    )
    oidc_client_id: str = Field(
        "",
        description="The webmail's client id at the OIDC issuer ([oidc] issuer), a public "
        "client (authorization code with PKCE) whose redirect URI is "
        "https://<this listener>/webmail/oidc/callback. Empty: no Pro Santé Connect button",
    )
    remote_image_max_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Largest remote image fetched when a reader asks"
    )
    remote_image_timeout: float = Field(
        5.0, gt=0, description="Seconds to fetch a remote image a reader asked for"
    )
    remote_images_allow_private: bool = Field(
        False,
        description="Let the image fetcher reach loopback and private addresses: for tests "
        "only (it would let a mail make the server probe its own network)",
    )
    login_attempts_per_minute: float = Field(
        10.0, gt=0, description="Webmail login attempts per client address and minute"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For/-Proto are believed "
        "(none by default: the client address is the TCP peer's)",
    )
    max_connections: int = Field(
        1000, ge=1, description="Concurrent HTTP connections and requests served; beyond, 503"
    )
    max_requests_per_address: int = Field(
        50, ge=1, description="Concurrent requests one client address may have; beyond, 429"
    )
    header_timeout: float = Field(
        20.0,
        gt=0,
        description="Seconds a client has to send a whole request header, from connecting and "
        "after each response; then the connection is closed (slow or silent clients)",
    )


class ImapSettings(BaseModel):
    """IMAP for mail clients (docs/imap.md)."""

    listen_host: str = Field("127.0.0.1", description="Address the IMAP listeners bind")
    port: int = Field(
        143, ge=0, le=65535, description="IMAP with STARTTLS, login only after TLS (0: off)"
    )
    tls_port: int = Field(
        993, ge=0, le=65535, description="IMAP over implicit TLS (RFC 8314; 0: off)"
    )
    login_timeout: float = Field(
        60.0, gt=0, description="Seconds a client may stay silent before it has logged in"
    )
    command_timeout: float = Field(
        1800.0, gt=0, description="Seconds a logged-in client may stay silent (RFC 9051 §5.4)"
    )
    idle_timeout: float = Field(
        1800.0, gt=0, description="Seconds an IDLE may last before the server ends it (RFC 2177)"
    )
    literal_timeout: float = Field(
        60.0, gt=0, description="Seconds a client may take to send a literal it announced"
    )
    max_literal_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1024,
        description="Largest literal (APPEND message) accepted; refused before it is read",
    )
    max_line_bytes: int = Field(
        65536, ge=1024, description="Longest command line accepted, literals apart"
    )
    max_bad_commands: int = Field(
        5, ge=1, description="Consecutive bad commands after which the connection is closed"
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections one IMAP listener serves at most; beyond, BYE"
    )
    max_connections_per_address: int = Field(
        20,
        ge=1,
        description="Connections one client address may hold open before logging in; beyond, BYE",
    )
    max_sessions_per_user_address: int = Field(
        10,
        ge=1,
        description="Logged-in sessions one account may hold from one address (Dovecot's "
        "mail_max_userip_connections is 10)",
    )
    max_preauth_literal_bytes: int = Field(
        1024,
        ge=0,
        description="Largest literal read before login (a LOGIN password); larger ones, and "
        "APPEND, are refused before a byte is read",
    )
    max_command_bytes: int = Field(
        26 * 1024 * 1024 + 65536,
        ge=1024,
        description="Most bytes of one command, all its literals together; beyond, BAD [TOOBIG]",
    )
    poll_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between database checks of a selected folder for changes made by "
        "other processes (changes made in this process are pushed at once)",
    )


class MimeSettings(BaseModel):
    """Limits on a message's MIME structure, applied where messages are accepted (every door)
    and where they are read (IMAP, webmail): docs/security.md."""

    model_config = ConfigDict(frozen=True)

    max_depth: int = Field(
        32,
        ge=2,
        le=64,
        description="Deepest nesting of multiparts and embedded messages; deeper mail is "
        "refused at acceptance (554 5.6.0) and read as one opaque part",
    )
    max_parts: int = Field(
        1000,
        ge=10,
        description="Most MIME parts in one message; beyond, refused at acceptance and the "
        "rest read as one opaque part",
    )


class AuthoritySettings(BaseModel):
    listen_host: str = Field("127.0.0.1", description="Address the authority's HTTPS server binds")
    listen_port: int = Field(
        8443, ge=0, le=65535, description="Port of the authority's HTTPS server"
    )
    signing_certificate: Path | None = Field(
        None, description="PEM certificate used to sign the whitelist"
    )
    signing_key: Path | None = Field(None, description="PEM private key used to sign the whitelist")
    signing_chain: Path | None = Field(
        None, description="PEM intermediates included in the signature"
    )
    admin_token_file: Path | None = Field(
        None,
        description="File holding the bearer token that the JSON admin API requires. "
        "Empty: data_dir/authority-admin.token (created on first start)",
    )


class AuthSettings(BaseModel):
    """Password hashing, one-time codes and login throttling (docs/auth.md)."""

    argon2_time_cost: int = Field(
        3, ge=1, description="argon2id passes (RFC 9106 second recommended option: 3)"
    )
    argon2_memory_kib: int = Field(
        64 * 1024,
        ge=8,
        description="argon2id memory in KiB (RFC 9106 second recommended option: 65536 = 64 MiB)",
    )
    argon2_parallelism: int = Field(
        1, ge=1, le=255, description="argon2id lanes (1: each guess costs an attacker the most)"
    )
    totp_issuer: str = Field(
        "",
        description="Issuer shown by authenticator apps (RFC 6238 codes). Empty: the operator's "
        "name, else 'MSSanté'",
    )
    throttle_base: float = Field(
        0.5, ge=0, description="Seconds of delay after the first failed login (doubles after each)"
    )
    throttle_cap: float = Field(
        30.0, ge=0, description="Longest delay after failed logins, seconds"
    )
    throttle_window: float = Field(
        900.0, gt=0, description="Seconds after which a failed login is forgotten"
    )
    throttle_address_allowance: int = Field(
        20,
        ge=0,
        description="Failed logins one client address may make within the window before its "
        "own delay starts (many users may share an address behind NAT); the delay per account "
        "starts at the first failure",
    )
    revocation_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="Seconds between reads of the revocations table: a session resting on "
        "something revoked by another process (CLI, another node) ends within this delay "
        "(docs/revocation.md; revocations made in this process apply at once)",
    )

    @model_validator(mode="after")
    def _argon2_memory_fits_lanes(self) -> AuthSettings:
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_kib must be at least 8 KiB per lane")
        return self


class OidcSettings(BaseModel):
    """OpenID Connect (docs/oidc.md): the issuer whose access tokens open mail (SASL XOAUTH2 and
    OAUTHBEARER), and, for ``mssante oidc serve``, the local provider standing in for Pro Santé
    Connect. Fields marked "provider" are read by the provider only."""

    issuer: str = Field(
        "",
        description="Issuer identifier (https URL) whose access tokens are accepted; for the "
        "provider, its own identifier (empty there: https://localhost:<listen_port>). Empty on "
        "a mail server: OIDC logins are off. Pro Santé Connect's is "
        "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet",
    )
    jwks_url: str = Field(
        "", description="The issuer's JWKS URL. Empty: read from its discovery document"
    )
    audience: str = Field(
        "mssante-mail",
        description="The 'aud' an access token must carry to open mail (the provider writes it)",
    )
    accepted_acr: list[str] = Field(
        default_factory=lambda: ["eidas1", "eidas2"],
        description="Authentication levels ('acr') accepted for mail logins",
    )
    clock_skew: int = Field(
        60, ge=0, le=600, description="Seconds of clock difference tolerated on exp, nbf and iat"
    )
    client_id: str = Field(
        "",
        description="This mail server's client id at the issuer, for token introspection "
        "(RFC 7662) and the revocation checks of long sessions. Empty: no such checks",
    )
    client_secret_file: Path | None = Field(
        None, description="File holding that client's secret (mode 0600)"
    )
    authorization_endpoint: str = Field(
        "",
        description="The issuer's authorization endpoint, written into the mail clients' "
        "autoconfiguration (OAuth2). Empty: <issuer>/authorize, the local provider's",
    )
    token_endpoint: str = Field(
        "",
        description="The issuer's token endpoint, for the autoconfiguration. Empty: "
        "<issuer>/token, the local provider's",
    )
    recheck_seconds: float = Field(
        60.0,
        gt=0,
        description="Seconds between the questions to the issuer whether the tokens of open "
        "sessions (IMAP, submission, webmail) still hold (docs/revocation.md)",
    )
    http_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the issuer")
    listen_host: str = Field("127.0.0.1", description="Provider: address its HTTPS server binds")
    listen_port: int = Field(9443, ge=0, le=65535, description="Provider: its HTTPS port")
    signing_key: Path | None = Field(
        None,
        description="Provider: PEM RSA key signing ID and access tokens. Empty: "
        "data_dir/oidc/signing-key.pem (created on first start)",
    )
    access_token_lifetime: int = Field(
        300, ge=30, le=3600, description="Provider: seconds an access token lives"
    )
    id_token_lifetime: int = Field(
        300, ge=30, le=3600, description="Provider: seconds an ID token lives"
    )
    refresh_token_lifetime: int = Field(
        36000,
        ge=60,
        description="Provider: seconds a refresh token lives unused (each use gives a new one)",
    )
    authorization_code_lifetime: int = Field(
        60, ge=10, le=600, description="Provider: seconds an authorization code lives"
    )
    clients: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Provider: public clients (mail software, webmail): client_id -> its "
        "redirect URIs. They use the authorization code flow with PKCE S256",
    )
    resource_servers: dict[str, str] = Field(
        default_factory=dict,
        description="Provider: mail servers allowed to introspect tokens: client_id -> SHA-256 "
        "(hex) of its secret ('mssante oidc new-secret' makes one)",
    )
    account_configs: list[Path] = Field(
        default_factory=list,
        description="Provider: configuration files of the operators whose accounts log in with "
        "password and TOTP (the login's domain picks one). Empty: this node's own database",
    )
    password_without_totp: bool = Field(
        True,
        description="Provider: accept the password alone (acr eidas1) from an account that has "
        "no TOTP device",
    )


class DirectorySettings(BaseModel):
    """The national directory (docs/directory.md): importing the agency's extraction, searching
    it, and the copy operators keep."""

    max_line_bytes: int = Field(
        8192,
        ge=1024,
        le=1_048_576,
        description="Longest extraction line accepted, in bytes (end of line included); a longer "
        "line is reported and skipped without ever being held in memory",
    )
    batch_rows: int = Field(
        20_000, ge=100, description="Lines sent to the database at once while importing"
    )
    reported_bad_lines: int = Field(
        1000,
        ge=0,
        description="Bad lines whose number and reason an import keeps for its report (all of "
        "them are counted)",
    )
    import_cache_mib: int = Field(
        16,
        ge=2,
        description="SQLite page cache of the importing connection, in MiB: bounds the import's "
        "memory; more is faster",
    )
    search_default_limit: int = Field(
        10, ge=1, le=200, description="Type-ahead results returned when the caller sets no limit"
    )
    search_max_limit: int = Field(
        50, ge=1, le=200, description="Most type-ahead results one query may ask for"
    )
    max_query_chars: int = Field(
        100, ge=10, le=1000, description="Longest search text accepted, in characters"
    )
    max_query_words: int = Field(
        6, ge=1, le=20, description="Words of a search text that are used (the others ignored)"
    )
    searches_per_second: float = Field(
        20.0,
        gt=0,
        description="Searches (type-ahead and FHIR) one client address may make each second, "
        "after a burst of search_burst; more are answered 429 with Retry-After",
    )
    search_burst: int = Field(200, ge=1, description="Searches one client address may make at once")
    fhir_max_count: int = Field(
        100, ge=1, le=1000, description="Most resources in one FHIR search Bundle (_count)"
    )
    extraction_url: str = Field(
        "",
        description="Operator: the authority's current extraction, fetched by 'mssante directory "
        "fetch' (https URL ending in /directory/extraction; its certificate is checked against "
        "pki.trust_anchors)",
    )
    max_extraction_bytes: int = Field(
        2_000_000_000,
        ge=1024,
        description="Operator: a downloaded extraction larger than this is refused",
    )
    refresh_seconds: float = Field(
        86_400,
        gt=0,
        description="Operator: seconds between two downloads of the extraction by the running "
        "operator (the authority answers 304 when nothing changed); 0 is refused, an empty "
        "extraction_url turns the copy off",
    )
    retry_seconds: float = Field(
        900,
        gt=0,
        description="Operator: seconds before trying again after a failed download or import "
        "(the copy in force is kept meanwhile)",
    )


class PublicationSettings(BaseModel):
    """Operators publishing their mailboxes to the national directory by FHIR PATCH
    (docs/publication.md). Fields marked "authority" are read by the authority only."""

    authority_url: str = Field(
        "",
        description="Operator: the authority's FHIR base URL (https, e.g. "
        "https://annuaire.autorite.example/fhir); PATCHes go to <url>/Practitioner and "
        "<url>/Organization with this node's TLS certificate, and the authority's certificate "
        "is checked against pki.trust_anchors. Empty: changes wait in the outbox",
    )
    retry_schedule: list[int] = Field(
        default_factory=lambda: [5, 15, 60, 300, 900, 3600],
        min_length=1,
        description="Operator: seconds before each new attempt while the authority is away or "
        "answers 5xx; the last repeats (changes are never given up)",
    )
    poll_seconds: float = Field(
        5.0, gt=0, description="Operator: how often the outbox is read for new changes"
    )
    timeout: float = Field(30.0, gt=0, description="Operator: seconds to wait for the authority")
    batch_size: int = Field(
        50, ge=1, le=1000, description="Operator: changes claimed from the outbox at once"
    )
    lease_seconds: int = Field(
        120,
        ge=10,
        description="Operator: a claimed change not settled within this time (a crashed "
        "process) is sent again",
    )
    max_patch_bytes: int = Field(
        65536,
        ge=1024,
        le=10_485_760,
        description="Authority: largest FHIR PATCH body accepted (413 above)",
    )
    max_operations: int = Field(
        100, ge=1, le=10_000, description="Authority: most operations in one PATCH"
    )


class Settings(BaseSettings):
    """All of one node's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MSSANTE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    role: Role = Field(Role.OPERATOR, description="operator or authority")
    data_dir: Path = Field(
        Path("./mssante-data"), description="Folder of this node's state (database, blobs, caches)"
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    blobs: BlobSettings = Field(default_factory=BlobSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    pki: PkiSettings = Field(default_factory=PkiSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    whitelist: WhitelistSettings = Field(default_factory=WhitelistSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    imap: ImapSettings = Field(default_factory=ImapSettings)
    mime: MimeSettings = Field(default_factory=MimeSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    authority: AuthoritySettings = Field(default_factory=AuthoritySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    directory: DirectorySettings = Field(default_factory=DirectorySettings)
    publication: PublicationSettings = Field(default_factory=PublicationSettings)

    # -- derived paths -------------------------------------------------------------------------
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'mssante.db'}"

    def blob_dir(self) -> Path:
        return self.blobs.path or self.data_dir / "blobs"

    def crl_cache_dir(self) -> Path:
        return self.pki.crl_cache_dir or self.data_dir / "crl"

    def whitelist_cache_dir(self) -> Path:
        return self.whitelist.cache_dir or self.data_dir / "whitelist"

    def smtp_hostname(self) -> str:
        if self.smtp.hostname:
            return self.smtp.hostname
        return f"smtp.{self.operator.domains[0]}" if self.operator.domains else "localhost"

    def admin_token_file(self) -> Path:
        return self.authority.admin_token_file or self.data_dir / "authority-admin.token"


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (TOML) if given, apply the environment, then ``overrides``.

    Relative paths in the file are taken relative to the file's folder, so a configuration
    folder can be moved as a whole.
    """
    file_data = _read_toml(path) if path else {}

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            toml = _DictSource(settings_cls, file_data)
            return (init_settings, env_settings, toml)

    try:
        loaded = _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    settings = Settings.model_validate(loaded.model_dump())
    if path:
        settings = _resolve_relative(settings, path.parent.resolve())
    return settings


class _DictSource(TomlConfigSettingsSource):
    """A TOML source from data already read, so that read errors are ours to word."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        self._data = data
        super().__init__(settings_cls)

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        return self._data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f"{path}: " if path else ""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    return f"{where}invalid configuration at '{field}': {first['msg']}"


def _resolve_relative(settings: Settings, base: Path) -> Settings:
    def fix(value: Any) -> Any:
        if isinstance(value, Path) and not value.is_absolute():
            return base / value
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, BaseModel):
            return value.model_copy(
                update={k: fix(getattr(value, k)) for k in type(value).model_fields}
            )
        return value

    return settings.model_copy(update={k: fix(getattr(settings, k)) for k in Settings.model_fields})


def sample_toml() -> str:
    """An annotated configuration file with every field, its default and its description."""
    lines = [
        "# mssante configuration. Every field is optional; shown with its default.",
        "# Environment variables override it: MSSANTE_<SECTION>__<FIELD>, e.g. MSSANTE_LOG__LEVEL.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel]]] = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append((name, annotation))
            continue
        lines += _field_lines(name, field.description, field.get_default(call_default_factory=True))
    for name, model in sections:
        lines += ["", f"[{name}]"]
        for fname, field in model.model_fields.items():
            lines += _field_lines(
                fname, field.description, field.get_default(call_default_factory=True)
            )
    return "\n".join(lines) + "\n"


def _field_lines(name: str, description: str | None, default: Any) -> list[str]:
    out = [f"# {description}"] if description else []
    if default is None:  # no default: shown commented out, to be filled in
        out.append(f'# {name} = ""')
    else:
        out.append(f"{name} = {toml_value(default)}")
    return out


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    text = str(value.value if isinstance(value, StrEnum) else value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

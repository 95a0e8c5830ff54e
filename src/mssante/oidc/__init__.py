"""A local OpenID Connect provider standing in for Pro Santé Connect (docs/oidc.md).

Pieces: :mod:`~mssante.oidc.models` (clients, the person, codes and tokens),
:mod:`~mssante.oidc.state` (the provider's small SQLite state), :mod:`~mssante.oidc.people`
(certificate and password + TOTP logins), :mod:`~mssante.oidc.server` (authlib's grants and
endpoints), :mod:`~mssante.oidc.app` (the HTTPS endpoints) and :mod:`~mssante.oidc.run`.
Mail servers validate the tokens with :class:`mssante.auth.bearer.BearerValidator`.
"""

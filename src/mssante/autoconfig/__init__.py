"""Client autoconfiguration: what a mail client needs to set itself up from an address alone.

- :mod:`.endpoints`: the IMAP and submission endpoints this operator offers, from the settings;
- :mod:`.document`: Thunderbird's ``config-v1.1.xml`` for one of our domains;
- :mod:`.app`: the small HTTP app serving it at the two places Thunderbird asks;
- :mod:`.dns`: the zone lines to publish (RFC 6186 SRV records, RFC 8314 ``_submissions``, MX,
  the ``autoconfig`` host).

See docs/autoconfig.md.
"""

from mssante.autoconfig.app import create_autoconfig_app

__all__ = ["create_autoconfig_app"]

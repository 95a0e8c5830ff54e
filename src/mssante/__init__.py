"""mssante: an MSSanté operator and authority (French secure health e-mail)."""

__version__ = "0.1.0"

"""Mailbox operations shared by SMTP, IMAP, the webmail and the API (one layer, no drift)."""

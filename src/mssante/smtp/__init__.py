"""SMTP: inbound from operators, submission from clients, the outbound queue."""

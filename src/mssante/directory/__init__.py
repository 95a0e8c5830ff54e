"""The national directory of MSSanté mailboxes (BAL): the agency's daily extraction, its import
into the store, type-ahead and FHIR-shaped search, and its re-export (docs/directory.md).

Modules: ``extraction`` (the file format, no I/O beyond the file), ``normalize`` (accent- and
case-free words), ``importer`` (the import as named stages), ``search`` (type-ahead), ``fhir``
(FHIR Bundle of Practitioner/Organization), ``export``, ``synth`` (realistic test files),
``api`` (the authority's HTTPS routes).
"""

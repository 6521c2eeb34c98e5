"""Shared file access, validation and canonicalisation for every dataset reader.

Every reader goes through these modules, so that all formats fail the same way: a
:class:`~recsys_cli.errors.DataError` whose message is one line saying what is wrong, where
(file, line, column) and what to do. No raw polars traceback ever reaches the user.

Row numbers in messages are 1-based line numbers in the file, counting the header line.

The modules (import from them directly; this package re-exports nothing):

* ``options``: config values (encoding, separator, choices, column mappings);
* ``messages``: the pieces of error messages and :class:`messages.Where` (row -> file line);
* ``files``: ``require_dir``, ``require_file``, ``locate_file`` (the data file inside
  ``data.path``), gzip-transparent ``open_binary`` / ``first_line``, ``check_text`` (a binary
  format or UTF-16 / UTF-32 text named, from the bytes ``sniff`` recognises), UTF-8 diagnostics;
* ``sniff``: what the first bytes of a file show it to be (magic bytes, byte-order marks);
* ``csv_files``: ``read_csv`` (typed fast path, string fallback for diagnostics),
  ``read_lines``, ``require_columns``, ``check_field_count``;
* ``json_lines``: ``iter_ndjson`` (chunked JSON lines, plain or gzip), ``peek_json_keys``;
* ``columns``: ``check_ids``, ``to_float``, ``to_datetime``;
* ``assemble``: ``build_events``, ``build_items``, ``attach_item_category``, ``finish_events``.
* ``context``: ``context_mapping`` (the names of ``data.columns.context`` checked), the built-in
  context feature names a context column may not take.
"""

"""Fuzzball application catalogs: templates rendered with Go's text/template and sprig,
typed values, metadata, and catalogs read from directories or git repositories."""

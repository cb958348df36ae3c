"""Reporting layer: model comparison (``compare``), figures (``plots``), findings in words
(``findings``) and the HTML report (``report``). See docs/architecture.md."""

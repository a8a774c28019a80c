"""Gradient health as a CI gate: ``baseline`` reads a saved report and compares layers; ``policy`` turns a report
(and a comparison) into pass/fail checks. No rendering here (``gradscope.report.check`` and ``.diff`` do that)."""

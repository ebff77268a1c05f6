"""The sweep report: statistics, tables, figures and findings."""

"""Retrieval evaluation: the LAReQA protocol over ScaNN and exact search."""

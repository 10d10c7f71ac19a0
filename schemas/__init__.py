"""The curated schema (interactions.pbtxt), installed with the code that enforces it."""

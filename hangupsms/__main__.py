"""`python -m hangupsms`."""

from hangupsms.cli import entry

entry()

"""`hangupsms doctor`: whether a PBX's CDR database (`pbx[].cdr`) can be read as configured."""

from __future__ import annotations

from hangupsms.amiaccess import Finding, Status
from hangupsms.cdrsource import CdrError, SqliteCdrSource
from hangupsms.settings import CdrConfig

# The columns the README asks `cdr_sqlite3_custom.conf` for, before the variables' columns.
_COLUMNS = ("start", "end", "clid", "src", "dst", "dcontext", "channel", "dstchannel",
            "lastapp", "lastdata", "duration", "billsec", "disposition", "uniqueid",
            "linkedid")


async def check_cdr(cdr: CdrConfig, timezone: str) -> Finding:
    """Read the table's newest row number and the columns the configuration names."""
    try:
        source = SqliteCdrSource(cdr, timezone)
        latest = await source.latest_rowid()
        await source.rows_after(latest)  # selects every configured column: none missing
    except CdrError as exc:
        return Finding(Status.MISSING, "cdr", str(exc),
                       degrades="calls that end while hangupsms is not connected are "
                       "finished only from what was seen (or lost); run it as a user in the "
                       "asterisk group if the file cannot be opened",
                       fix=sqlite_custom_lines(cdr))
    return Finding(Status.OK, "cdr", f"{cdr.sqlite}: table '{cdr.table}' has every column "
                   f"hangupsms reads ({latest} rows so far)")


def sqlite_custom_lines(cdr: CdrConfig) -> tuple[str, ...]:
    """The `cdr_sqlite3_custom.conf` that writes what `cdr` reads (README, "The CDR database")."""
    columns = list(dict.fromkeys([*_COLUMNS, *cdr.variables.values()]))
    values = ",".join(f"'${{CDR({column})}}'" for column in columns)
    return ("; /etc/asterisk/cdr_sqlite3_custom.conf", "[master]", f"table => {cdr.table}",
            f"columns => {', '.join(columns)}", f"values => {values}",
            *(f"; and in the dialplan: Set(CDR({column})=${{{name}}})"
              for name, column in cdr.variables.items()))

"""Configuration loading: reference shapes load, and every mistake names its key path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hangupsms.config import ConfigError, TimeWindow, load_config, parse_config

FIXTURES = Path(__file__).parent / "fixtures" / "ami"

# The reference shape of DESIGN.md ("Configuration"), as written there.
DESIGN_EXAMPLE = """\
pbx:
  - name: pbx1
    host: 127.0.0.1
    port: 5038
    username: hangupsms
    secret: ${AMI_SECRET}
    inbound_contexts: [from-pstn, from-trunk]
    internal_contexts: [from-internal]
database: /var/lib/hangupsms/hangupsms.db
timezone: Europe/London
phone:
  default_region: GB        # how national numbers like 07700 900123 are read
  allowed_regions: [GB]     # never text anywhere else
providers:
  twilio:
    kind: twilio
    account_sid: ${TWILIO_ACCOUNT_SID}
    auth_token: ${TWILIO_AUTH_TOKEN}
    from: "+447700900000"
    # api_url: http://127.0.0.1:8099   Twilio-compatible endpoint (tests, SignalWire)
  log:
    kind: console
templates:
  thanks: "Thanks for calling Acme. You spoke with {{ agent_name or 'our team' }}."
  missed: "Sorry we missed your call to {{ did }}. We will call you back."
  appointment: "Your appointment {{ vars.HANGUPSMS_ORDER }} is confirmed."
rules:                      # evaluated in order; first match wins for each recipient
  - name: appointment
    when: {vars: {HANGUPSMS_TEMPLATE: appointment}}
    send: {template: appointment, to: customer, via: twilio}
  - name: support-thanks
    when: {direction: inbound, queue: support, answered: true}
    send: {template: thanks, to: customer, via: twilio}
  - name: missed
    when: {direction: inbound, answered: false}
    send: {template: missed, to: customer, via: twilio}
"""
DESIGN_ENV = {
    "AMI_SECRET": "s3cret-ami",
    "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "TWILIO_AUTH_TOKEN": "tok-very-secret",
}

# A small valid configuration the error tests break one line at a time.
BASE = """\
pbx:
  - name: pbx1
    username: hangupsms
    secret: x
database: test.db
timezone: Europe/London
phone:
  default_region: GB
  number_check: possible
providers:
  twilio:
    kind: twilio
    account_sid: AC1
    auth_token: t
    from: "+447700900000"
templates:
  thanks: "Thanks {{ customer_name }}"
rules:
  - name: thanks
    when: {direction: inbound, answered: true}
    send: {template: thanks, to: customer, via: twilio}
"""


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line of `text` containing `needle`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def broken(old: str, new: str, text: str = BASE) -> tuple[str, ConfigError]:
    """`text` with `old` replaced by `new`, and the error it must raise."""
    assert old in text
    changed = text.replace(old, new, 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(changed, "test.yaml", environ={})
    return changed, caught.value


def test_reference_configuration_of_the_transcripts_loads() -> None:
    cfg = load_config(FIXTURES / "reference.yaml", environ={})
    assert [pbx.name for pbx in cfg.pbx] == ["lab"]
    assert cfg.pbx[0].secret == "labsecret"
    assert cfg.pbx[0].inbound_contexts == ("from-pstn",)
    assert cfg.database == (FIXTURES / "hangupsms-reference.db").absolute()
    assert cfg.phone.allowed_regions == ("GB", "FR", "DE", "AU")
    assert cfg.phone.number_check == "possible"
    assert cfg.providers["twilio"].from_ == "+447700900000"
    assert cfg.providers["twilio"].api_url == "http://127.0.0.1:8099"
    assert [rule.name for rule in cfg.rules] == [
        "appointment", "thanks", "missed", "missed-alert", "outbound-followup",
    ]  # fmt: skip
    assert cfg.rules[1].when.min_talk_seconds == 1
    assert cfg.rules[3].send.to == "+447700900777"
    assert dict(cfg.rules[0].when.vars) == {"HANGUPSMS_TEMPLATE": "appointment"}


def test_design_example_loads_with_secrets_from_the_environment() -> None:
    cfg = parse_config(DESIGN_EXAMPLE, environ=DESIGN_ENV)
    assert cfg.pbx[0].secret == "s3cret-ami"
    assert cfg.providers["twilio"].auth_token == "tok-very-secret"
    assert cfg.providers["log"].kind == "console"
    assert cfg.rules[1].when.queue == ("support",)
    assert cfg.rules[1].when.answered is True
    assert cfg.database == Path("/var/lib/hangupsms/hangupsms.db")
    assert "tok-very-secret" not in repr(cfg)
    assert "s3cret-ami" not in repr(cfg)


def test_relative_database_of_a_string_config_is_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_config(BASE, environ={}).database == tmp_path / "test.db"


def test_relative_database_of_a_file_is_next_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "hangupsms.yaml"
    path.parent.mkdir()
    path.write_text(BASE, encoding="utf-8")
    cfg = load_config(path, environ={})
    assert cfg.database == path.parent / "test.db"
    assert cfg.source == str(path)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load_config(tmp_path / "missing.yaml", environ={})


def test_unknown_key_is_reported_with_a_suggestion() -> None:
    text, error = broken("{direction: inbound,", "{direction: inbound, quee: sales,")
    assert error.path == "rules[0].when.quee"
    assert error.line == line_of(text, "quee")
    assert "unknown key 'quee'" in error.message
    assert "did you mean 'queue'?" in error.message
    assert str(error) == f"test.yaml:{error.line}: rules[0].when.quee: {error.message}"


def test_unknown_top_level_key_names_itself() -> None:
    text, error = broken("timezone:", "timezon: UTC\ntimezone:")
    assert (error.path, error.line) == ("timezon", line_of(text, "timezon:"))
    assert "did you mean 'timezone'?" in error.message


def test_missing_required_key_names_it() -> None:
    text, error = broken("    username: hangupsms\n", "")
    assert error.path == "pbx[0].username"
    assert error.line == line_of(text, "- name: pbx1")
    assert error.message == "missing (required)"


@pytest.mark.parametrize(
    ("old", "new", "path", "wanted"),
    [
        ("    secret: x", "    secret: x\n    port: abc", "pbx[0].port", "an integer"),
        ("    secret: x", '    secret: x\n    port: "5038"', "pbx[0].port", "an integer"),
        ("answered: true", "answered: 'yes please'", "rules[0].when.answered", "a boolean"),
        ("  number_check", "  mobile_only: 1\n  number_check", "phone.mobile_only", "a boolean"),
        (
            "    secret: x",
            "    secret: x\n    ping_interval: soon",
            "pbx[0].ping_interval",
            "number",
        ),
        ("direction: inbound", "direction: [inbound]", "rules[0].when.direction", "single value"),
    ],
)
def test_wrong_types_name_the_key_and_line(old: str, new: str, path: str, wanted: str) -> None:
    text, error = broken(old, new)
    assert error.path == path
    assert wanted in error.message
    key = path.rsplit(".", 1)[-1]
    assert error.line == line_of(text, f"{key}:")


def test_a_mapping_where_a_list_is_wanted_is_refused() -> None:
    pbx = "pbx:\n  - name: pbx1\n    username: hangupsms\n    secret: x\n"
    _, error = broken(pbx, "pbx:\n  name: pbx1\n")
    assert (error.path, error.line) == ("pbx", 1)
    assert error.message == "expected a list, got a mapping"


def test_out_of_range_port_is_refused() -> None:
    text, error = broken("    secret: x", "    secret: x\n    port: 70000")
    assert (error.path, error.line) == ("pbx[0].port", line_of(text, "port:"))
    assert "at most 65535" in error.message


def test_missing_template_is_named() -> None:
    text, error = broken("template: thanks,", "template: thank,")
    assert (error.path, error.line) == ("rules[0].send.template", line_of(text, "template: thank,"))
    assert "unknown template 'thank'" in error.message
    assert "did you mean 'thanks'?" in error.message


def test_send_via_an_undefined_provider_is_refused() -> None:
    _, error = broken("via: twilio}", "via: sms}")
    assert error.path == "rules[0].send.via"
    assert "unknown provider 'sms'" in error.message


def test_unknown_provider_kind_is_refused() -> None:
    text, error = broken("kind: twilio", "kind: nexmo")
    assert (error.path, error.line) == ("providers.twilio.kind", line_of(text, "kind: nexmo"))


def test_twilio_provider_needs_a_sender() -> None:
    text, error = broken('    from: "+447700900000"\n', "")
    assert (error.path, error.line) == ("providers.twilio", line_of(text, "  twilio:"))
    assert "'from' or 'messaging_service_sid'" in error.message


def test_twilio_key_on_a_console_provider_is_unknown() -> None:
    _, error = broken("kind: twilio", "kind: console")
    assert error.path == "providers.twilio.account_sid"


def test_missing_environment_variable_names_key_and_variable() -> None:
    text, error = broken("auth_token: t", "auth_token: ${TWILIO_AUTH_TOKEN}")
    assert error.path == "providers.twilio.auth_token"
    assert error.line == line_of(text, "auth_token")
    assert "'TWILIO_AUTH_TOKEN' is not set" in error.message


def test_value_from_the_environment_is_never_echoed_in_an_error() -> None:
    text = BASE.replace("    secret: x", "    secret: x\n    port: ${AMI_PORT}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={"AMI_PORT": "hunter2-secret"})
    assert caught.value.path == "pbx[0].port"
    assert "hunter2-secret" not in str(caught.value)


def test_number_from_the_environment_is_read_as_a_number() -> None:
    text = BASE.replace("    secret: x", "    secret: x\n    port: ${AMI_PORT}")
    assert parse_config(text, environ={"AMI_PORT": "5039"}).pbx[0].port == 5039


def test_variables_are_substituted_inside_strings_and_dollar_dollar_escapes() -> None:
    text = BASE.replace("secret: x", 'secret: "pre-${S}-$${S}-post"')
    assert parse_config(text, environ={"S": "v"}).pbx[0].secret == "pre-v-${S}-post"


def test_systemd_credential_file_is_used_when_the_variable_is_unset(tmp_path: Path) -> None:
    (tmp_path / "TWILIO_AUTH_TOKEN").write_text("from-credential\n", encoding="utf-8")
    text = BASE.replace("auth_token: t", "auth_token: ${TWILIO_AUTH_TOKEN}")
    cfg = parse_config(text, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert cfg.providers["twilio"].auth_token == "from-credential"
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "TWILIO_AUTH_TOKEN": "from-env"}
    assert parse_config(text, environ=env).providers["twilio"].auth_token == "from-env"


def test_credential_directory_without_the_file_is_still_missing(tmp_path: Path) -> None:
    text = BASE.replace("auth_token: t", "auth_token: ${TWILIO_AUTH_TOKEN}")
    with pytest.raises(ConfigError, match="'TWILIO_AUTH_TOKEN' is not set"):
        parse_config(text, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_unterminated_variable_reference_is_an_error() -> None:
    _, error = broken("secret: x", "secret: ${OOPS")
    assert error.path == "pbx[0].secret"
    assert "unterminated" in error.message


def test_bad_timezone_is_refused() -> None:
    text, error = broken("timezone: Europe/London", "timezone: Europe/Londres")
    assert (error.path, error.line) == ("timezone", line_of(text, "Londres"))


@pytest.mark.parametrize(
    ("old", "new", "path", "needle"),
    [
        ("default_region: GB", "default_region: UK", "phone.default_region", "UK"),
        ("default_region: GB", "default_region: GB\n  allowed_regions: [GB, XX]",
         "phone.allowed_regions[1]", "allowed_regions"),
    ],
)  # fmt: skip
def test_bad_region_is_refused(old: str, new: str, path: str, needle: str) -> None:
    text, error = broken(old, new)
    assert (error.path, error.line) == (path, line_of(text, needle))
    assert "unknown region code" in error.message


def test_norway_is_a_region_not_a_boolean() -> None:
    text = BASE.replace("default_region: GB", "default_region: GB\n  allowed_regions: [GB, NO]")
    assert parse_config(text, environ={}).phone.allowed_regions == ("GB", "NO")


def test_bad_number_check_is_refused() -> None:
    _, error = broken("number_check: possible", "number_check: strict")
    assert error.path == "phone.number_check"


def test_yaml_syntax_error_reports_its_line() -> None:
    text = BASE.replace('  thanks: "Thanks {{ customer_name }}"', "  thanks: [unclosed")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", environ={})
    assert caught.value.line is not None
    assert line_of(text, "[unclosed") <= caught.value.line <= line_of(text, "rules:") + 1
    assert "YAML syntax error" in str(caught.value)


def test_tab_indentation_error_points_at_the_tab() -> None:
    text = BASE.replace("    secret: x", "\tsecret: x")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert caught.value.line == line_of(text, "\tsecret")


def test_empty_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        parse_config("# nothing\n", environ={})


def test_template_syntax_error_names_the_template_and_its_line() -> None:
    template = 'thanks: "Thanks\\n{{ customer_name }\\nbye"'
    text, error = broken('thanks: "Thanks {{ customer_name }}"', template)
    assert (error.path, error.line) == ("templates.thanks", line_of(text, 'thanks: "Thanks'))
    assert "template line 2" in error.message


def test_template_with_max_segments() -> None:
    text = BASE.replace(
        'thanks: "Thanks {{ customer_name }}"',
        'thanks: {text: "Thanks {{ customer_name }}", max_segments: 2}',
    )
    template = parse_config(text, environ={}).templates["thanks"]
    assert (template.text, template.max_segments) == ("Thanks {{ customer_name }}", 2)


def test_duplicate_rule_names_are_refused() -> None:
    rule = "  - name: thanks\n    send: {template: thanks, to: agent, via: twilio}\n"
    text, error = broken("rules:\n", "rules:\n" + rule)
    assert (error.path, error.line) == ("rules[1].name", line_of(text, "via: twilio}") + 1)


def test_duplicate_key_is_refused() -> None:
    text, error = broken("timezone: Europe/London", "timezone: UTC\ntimezone: Europe/London")
    assert (error.path, error.line) == ("timezone", line_of(text, "Europe/London"))


def test_duplicate_pbx_names_are_refused() -> None:
    second = "  - {name: pbx1, username: u, secret: s}\n"
    _, error = broken("database:", second + "database:")
    assert error.path == "pbx[1].name"


def test_fixed_recipient_is_stored_as_e164_and_junk_is_refused() -> None:
    text = BASE.replace("to: customer", "to: '07700 900777'")
    assert parse_config(text, environ={}).rules[0].send.to == "+447700900777"
    _, error = broken("to: customer", "to: manager")
    assert error.path == "rules[0].send.to"
    assert "not a textable number" in error.message


def test_conditions_accept_one_value_or_a_list_and_unquoted_numbers() -> None:
    text = BASE.replace(
        "{direction: inbound, answered: true}",
        "{did: 4000, queue: [support, sales], disposition: busy, customer_number: '^\\+44'}",
    )
    when = parse_config(text, environ={}).rules[0].when
    assert (when.did, when.queue, when.disposition) == (("4000",), ("support", "sales"), ("busy",))
    assert when.customer_number == "^\\+44"


@pytest.mark.parametrize(
    ("condition", "path"),
    [
        ("direction: sideways", "rules[0].when.direction"),
        ("disposition: [busy, hung]", "rules[0].when.disposition[1]"),
        ("customer_number: '(+'", "rules[0].when.customer_number"),
        ("queue: []", "rules[0].when.queue"),
        ("min_talk_seconds: -1", "rules[0].when.min_talk_seconds"),
        ("min_talk_seconds: 9, max_talk_seconds: 3", "rules[0].when.max_talk_seconds"),
    ],
)
def test_bad_conditions_are_refused(condition: str, path: str) -> None:
    _, error = broken("direction: inbound, answered: true", condition)
    assert error.path == path


def test_time_windows_parse_including_unquoted_times_and_wrap() -> None:
    text = BASE.replace(
        "{direction: inbound, answered: true}",
        "\n      time:\n"
        "        - {days: [mon, Tuesday, fri], from: '09:00', to: 17:30}\n"
        "        - {from: '22:00', to: '06:00'}\n"
        "        - {days: sun, from: '00:00', to: '24:00'}",
    )
    windows = parse_config(text, environ={}).rules[0].when.time
    assert windows == (
        TimeWindow(frozenset({0, 1, 4}), 9 * 60, 17 * 60 + 30),
        TimeWindow(frozenset(range(7)), 22 * 60, 6 * 60),
        TimeWindow(frozenset({6}), 0, 24 * 60),
    )


@pytest.mark.parametrize(
    ("window", "path"),
    [
        ("{days: [mon, funday], from: '09:00', to: '10:00'}", "rules[0].when.time.days[1]"),
        ("{from: '9am', to: '10:00'}", "rules[0].when.time.from"),
        ("{from: '09:00', to: '24:01'}", "rules[0].when.time.to"),
        ("{from: '09:00', to: '09:00'}", "rules[0].when.time.to"),
        ("{from: '09:00'}", "rules[0].when.time.to"),
    ],
)
def test_bad_time_windows_are_refused(window: str, path: str) -> None:
    _, error = broken("direction: inbound, answered: true", f"time: {window}")
    assert error.path == path


def test_agents_directory_normalises_mobiles() -> None:
    text = (
        BASE + "agents:\n  agent1: {name: Agent One, mobile: '07700 900111'}\n  201: {name: Bo}\n"
    )
    agents = parse_config(text, environ={}).agents
    assert (agents["agent1"].name, agents["agent1"].mobile) == ("Agent One", "+447700900111")
    assert (agents["201"].name, agents["201"].mobile) == ("Bo", "")


def test_agent_with_a_bad_mobile_is_refused() -> None:
    text = BASE + "agents:\n  agent1: {name: A, mobile: 'call me'}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert (caught.value.path, caught.value.line) == (
        "agents.agent1.mobile",
        line_of(text, "call me"),
    )


def test_max_customer_name_must_be_positive() -> None:
    _, error = broken("timezone:", "max_customer_name: 0\ntimezone:")
    assert error.path == "max_customer_name"
    assert parse_config("max_customer_name: 20\n" + BASE, environ={}).max_customer_name == 20


def test_dollar_before_a_jinja_expression_needs_the_escape() -> None:
    _, error = broken('"Thanks {{ customer_name }}"', '"Total ${{ customer_name }}"')
    assert error.path == "templates.thanks"
    assert "$${" in error.message
    text = BASE.replace('"Thanks {{ customer_name }}"', '"Total $${{ customer_name }}"')
    assert parse_config(text, environ={}).templates["thanks"].text == "Total ${{ customer_name }}"


def test_retry_keys_under_a_provider_make_its_retry_policy() -> None:
    text = BASE.replace(
        '    from: "+447700900000"\n',
        '    from: "+447700900000"\n    max_attempts: 3\n    lookup_settle: 5\n'
        "    max_age: 3600\n    lookup_limit: 20\n",
    )
    provider = parse_config(text, "test.yaml", environ={}).providers["twilio"]
    assert (provider.retry.max_attempts, provider.retry.lookup_settle) == (3, 5.0)
    assert (provider.retry.max_age, provider.lookup_limit) == (3600.0, 20)
    assert provider.retry.max_delay == 300.0  # untouched keys keep their defaults


def test_a_retry_budget_of_zero_is_refused_with_its_key() -> None:
    changed, error = broken('    from: "+447700900000"\n',
                            '    from: "+447700900000"\n    max_attempts: 0\n')
    assert error.path == "providers.twilio.max_attempts"
    assert error.line == line_of(changed, "max_attempts")


def test_retention_needs_days_and_reads_its_schedule() -> None:
    cfg = parse_config(BASE + "retention: {days: 90, every_hours: 1}\n", "t.yaml", environ={})
    assert cfg.retention is not None
    assert (cfg.retention.days, cfg.retention.every_hours) == (90, 1.0)
    _, error = broken("rules:", "retention: {every_hours: 1}\nrules:")
    assert error.path == "retention.days"


def test_cdr_database_of_a_pbx_is_read_relative_to_the_file(tmp_path: Path) -> None:
    text = BASE.replace("    secret: x", "    secret: x\n    cdr:\n      sqlite: cdr/master.db\n"
                        "      variables: {HANGUPSMS_ORDER: hangupsms_order}\n"
                        "      timezone: UTC")
    path = tmp_path / "h.yaml"
    path.write_text(text, encoding="utf-8")
    cdr = load_config(path).pbx[0].cdr
    assert cdr is not None
    assert (cdr.sqlite, cdr.table, dict(cdr.variables), cdr.timezone, cdr.poll_interval) == (
        tmp_path / "cdr" / "master.db", "cdr", {"HANGUPSMS_ORDER": "hangupsms_order"}, "UTC",
        5.0)
    assert parse_config(BASE, environ={}).pbx[0].cdr is None


@pytest.mark.parametrize(("cdr", "path", "needle"), [
    ("{table: cdr}", "pbx[0].cdr.sqlite", "missing"),
    ('{sqlite: m.db, table: "cdr; DROP"}', "pbx[0].cdr.table", "not a plain SQL name"),
    ("{sqlite: m.db, variables: {X: 'a b'}}", "pbx[0].cdr.variables.X", "not a plain SQL name"),
    ("{sqlite: m.db, timezone: Mars/Base}", "pbx[0].cdr.timezone", "unknown time zone"),
    ("{sqlite: m.db, poll: 3}", "pbx[0].cdr.poll", "unknown key"),
])
def test_cdr_mistakes_name_key_and_line(cdr: str, path: str, needle: str) -> None:
    text = BASE.replace("    secret: x", f"    secret: x\n    cdr: {cdr}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert caught.value.path == path and needle in caught.value.message
    assert caught.value.line == line_of(text, "cdr:")

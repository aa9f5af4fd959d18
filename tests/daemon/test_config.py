"""Tests of jqueue.daemon.config: the option table, flags, the TOML file, precedence and errors."""

import argparse
import os

import pytest

from jqueue import errors
from jqueue.daemon import config


def parse(argv, program="masterd"):
    parser = argparse.ArgumentParser(prog="test", exit_on_error=False)
    config.add_arguments(parser, program)
    return parser.parse_args(argv)


def write(tmp_path, text):
    path = tmp_path / "jq.toml"
    path.write_text(text)
    return str(path)


def test_masterd_has_every_required_option_with_its_flag():
    """The table holds masterd's options, snake_case keys and --kebab-case flags."""
    options = {o.name: o for o in config.options_for("masterd")}
    expected = ["state_dir", "socket", "config", "workers", "log_level", "max_jobs",
                "checkpoint_interval", "shutdown_grace", "cluster_name", "master_node",
                "opcode_modules", "max_message_bytes", "read_timeout", "idle_timeout",
                "max_connections", "max_wait_timeout", "max_pipelined", "luxi_threads",
                "tags", "ping_interval", "ping_misses", "lost_grace", "epilog_failure",
                "event_buffer",
                "action_log_max_bytes", "action_log_time",
                "archive_after", "keep_archived", "retention_interval", "notify_prefixes",
                "notify_secret_file", "notify_command",
                "log_max_bytes", "service_log_rate", "slots", "allowed_users", "containment",
                "run_dir", "prolog", "epilog", "memory_reserve", "hook_timeout", "http",
                "http_tokens", "http_tls", "http_max_body", "http_max_headers",
                "http_request_timeout", "http_idle_timeout", "http_max_connections",
                "http_threads", "http_access_log"]
    assert list(options) == expected
    for option in options.values():
        if option.flag is not None:
            assert option.flag == "--" + option.name.replace("_", "-")
    assert options["opcode_modules"].flag is None and not options["config"].in_file
    assert options["workers"].default == 25 and options["shutdown_grace"].default == 30


@pytest.mark.parametrize("given, seconds", [
    ("6h", 21600), ("21d", 1814400), ("90", 90), ("1.5m", 90), ("0", 0), ("2w", 1209600)])
def test_retention_durations_take_units_on_the_command_line_and_in_the_file(
        tmp_path, given, seconds):
    """archive_after and keep_archived are seconds, or a number with s, m, h, d, w."""
    loaded = config.load("masterd", parse(["--state-dir", "/a", "--archive-after", given]))
    assert loaded.archive_after == seconds
    path = write(tmp_path, '[masterd]\nstate_dir = "/a"\nkeep_archived = "%s"\n' % given)
    assert config.load("masterd", parse(["--config", path])).keep_archived == seconds


@pytest.mark.parametrize("text", ['keep_archived = "3 days"', 'keep_archived = -1',
                                  'retention_interval = 0', 'archive_after = true',
                                  'archive_after = "inf"'])
def test_bad_retention_durations_are_refused_naming_the_option(tmp_path, text):
    path = write(tmp_path, '[masterd]\nstate_dir = "/a"\n%s\n' % text)
    with pytest.raises(errors.ConfigurationError, match=text.split(" ")[0]):
        config.load("masterd", parse(["--config", path]))


def test_defaults_apply_without_flags_or_file():
    """Only --state-dir given: every other option has its table default."""
    loaded = config.load("masterd", parse(["--state-dir", "/srv/jq"]))
    assert loaded.state_dir == "/srv/jq" and loaded.workers == 25
    assert loaded.log_level == "info" and loaded.opcode_modules == []
    assert loaded.cluster_name == "jqueue" and loaded.master_node
    assert config.socket_path(loaded) == "/srv/jq/run/jqueue.sock"


def test_flag_wins_over_file_which_wins_over_default(tmp_path):
    """A flag beats the config file, and the file beats the default."""
    path = write(tmp_path, '[masterd]\nstate_dir = "/a"\nworkers = 3\nread_timeout = 2.5\n')
    loaded = config.load("masterd", parse(["--config", path, "--workers", "7"]))
    assert (loaded.state_dir, loaded.workers, loaded.read_timeout) == ("/a", 7, 2.5)
    assert loaded.idle_timeout == 600 and loaded.path == path


def test_reread_takes_the_file_again_but_not_what_the_command_line_set(tmp_path):
    """A reload: the file's new values, an option it no longer sets back to its default,
    the flags' values kept; changes names what differs; a file gone is an error."""
    path = write(tmp_path, '[masterd]\nstate_dir = "/a"\nworkers = 3\nmax_jobs = 9\n')
    loaded = config.load("masterd", parse(["--config", path, "--workers", "7"]))
    assert loaded.given == {"config", "workers"}
    write(tmp_path, '[masterd]\nstate_dir = "/a"\nworkers = 4\nread_timeout = 2.5\n')
    again = config.reread(loaded)
    assert (again.workers, again.max_jobs, again.read_timeout) == (
        7, config.load("masterd", parse(["--state-dir", "/a"])).max_jobs, 2.5)
    assert config.changes(loaded, again) == {"max_jobs": (9, again.max_jobs),
                                             "read_timeout": (loaded.read_timeout, 2.5)}
    os.unlink(path)
    with pytest.raises(errors.ConfigurationError, match="config file %s" % path):
        config.reread(loaded)
    plain = config.load("masterd", parse(["--state-dir", "/a"]))
    assert config.reread(plain) is plain


def test_tables_of_other_programs_are_left_to_them(tmp_path):
    """[noded] and [cluster] tables are not masterd's business; unknown tables are errors."""
    path = write(tmp_path, '[masterd]\nstate_dir = "/a"\n[noded]\nlisten = "x"\n[cluster]\n')
    assert config.load("masterd", parse(["--config", path])).state_dir == "/a"
    path = write(tmp_path, '[masterd]\nstate_dir = "/a"\n[mastred]\nworkers = 1\n')
    with pytest.raises(errors.ConfigurationError, match=r"unknown section \[mastred\]"):
        config.load("masterd", parse(["--config", path]))


@pytest.mark.parametrize("text, words", [
    ("workers = 2\n", "workers is outside any table; options must be in a table such as "
                       "[masterd]"),
    ("[masterd]\nworkerz = 2\nzz = 1\n", "unknown option(s) in [masterd]: workerz, zz"),
    ("[masterd]\nconfig = 'x'\n", "unknown option(s) in [masterd]: config"),
    ("[masterd]\nworkers = -1\n", "[masterd] workers: must be an integer >= 0, got -1"),
    ("[masterd]\nworkers = true\n", "workers: must be an integer >= 0, got True"),
    ("[masterd]\nread_timeout = 0\n", "read_timeout: must be a number > 0"),
    ("[masterd]\nshutdown_grace = -1\n", "shutdown_grace: must be a number >= 0"),
    ("[masterd]\nlog_level = 'loud'\n", "log_level: must be one of debug, info"),
    ("[masterd]\naction_log_time = 'gmt'\n",
     "action_log_time: must be one of utc, local, got 'gmt'"),
    ("[masterd]\nopcode_modules = ['a', '']\n", "opcode_modules: must be a list"),
    ("[masterd]\ncluster_name = ''\n", "cluster_name: must be a non-empty string"),
    ("[masterd\n", "invalid TOML"),
])
def test_bad_files_name_the_file_and_the_option(tmp_path, text, words):
    """Every problem of a config file is a ConfigurationError naming the file and option."""
    path = write(tmp_path, text)
    with pytest.raises(errors.ConfigurationError) as raised:
        config.load("masterd", parse(["--state-dir", "/a", "--config", path]))
    assert words in str(raised.value) and path in str(raised.value)


def test_missing_file_and_missing_state_dir():
    """An unreadable file is a ConfigurationError; no state_dir anywhere is MissingOptionError."""
    with pytest.raises(errors.ConfigurationError, match="/nonexistent.toml"):
        config.load("masterd", parse(["--state-dir", "/a", "--config", "/nonexistent.toml"]))
    with pytest.raises(config.MissingOptionError, match="--state-dir is required"):
        config.load("masterd", parse([]))


@pytest.mark.parametrize("argv", [["--workers", "-1"], ["--workers", "x"],
                                  ["--read-timeout", "nan"], ["--log-level", "loud"],
                                  ["--shutdown-grace", "-1"], ["--workers", " 5"],
                                  ["--workers", "1_0"], ["--workers", "\u0663"],
                                  ["--read-timeout", "1_0"], ["--read-timeout", "inf"]])
def test_bad_flag_values_are_usage_errors(argv):
    """A bad flag value is refused by argparse (a usage error naming the flag)."""
    with pytest.raises(argparse.ArgumentError, match=argv[0]):
        parse(argv)


def test_flag_values_are_converted():
    """Numbers given as flags become ints or floats as the table says."""
    args = parse(["--state-dir", "/a", "--shutdown-grace", "2", "--read-timeout", "0.5",
                  "--max-connections", "10"])
    loaded = config.load("masterd", args)
    assert (loaded.shutdown_grace, loaded.read_timeout, loaded.max_connections) == (2, 0.5, 10)


def test_values_set_programmatically_are_checked_too():
    """A value put into args by code is checked like a flag (and the error names it)."""
    args = argparse.Namespace(state_dir="/a", workers=-3)
    with pytest.raises(errors.ConfigurationError, match="--workers: must be an integer"):
        config.load("masterd", args)


def test_config_is_read_only_and_has_only_its_options():
    """A Config cannot be changed and refuses unknown attribute names."""
    loaded = config.load("masterd", parse(["--state-dir", "/a"]))
    with pytest.raises(AttributeError):
        loaded.workers = 3
    with pytest.raises(AttributeError):
        loaded.no_such_option  # noqa: B018
    assert loaded.as_dict()["workers"] == 25


def test_rst_options_documents_every_option():
    """The man page text names every flag, key, default and the required option."""
    text = config.rst_options("masterd")
    for option in config.options_for("masterd"):
        assert (option.flag or option.name) in text
        if option.default_text() is not None:
            assert "Default: %s." % option.default_text() in " ".join(text.split())
    assert "Required." in text


def test_command_options_apply_to_both_daemons_with_their_defaults():
    """slots (default: the CPUs), allowed_users, containment and run_dir for masterd and
    noded."""
    for program in ("masterd", "noded"):
        loaded = config.load(program, parse(["--state-dir", "/a"], program))
        assert loaded.slots == (os.cpu_count() or 1) and loaded.allowed_users == []
        assert loaded.containment == "auto" and loaded.run_dir is None
        loaded = config.load(program, parse(["--state-dir", "/a", "--slots", "3",
                                             "--allowed-users", "nobody, daemon",
                                             "--containment", "process-group",
                                             "--run-dir", "/run/jq"], program))
        assert (loaded.slots, loaded.allowed_users, loaded.containment, loaded.run_dir) == (
            3, ["nobody", "daemon"], "process-group", "/run/jq")
    with pytest.raises(argparse.ArgumentError, match="--slots: must be an integer >= 1"):
        parse(["--state-dir", "/a", "--slots", "0"])

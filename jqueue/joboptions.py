"""A job's own options at submit: its group (``parent``) and its start time.

Besides its opcodes and its idempotency token, a submitted job may have:

    parent       the group it joins: a job id (negative in SubmitManyJobs: relative, -1
                 is the job just before in the request), a group title, or a path of
                 titles from the root ``a|b`` (jqueue.grouptree resolves it)
    not_before   epoch seconds before which it does not start
    start_in     seconds from the submit before which it does not start (the master's
                 clock counts, not the client's)
    notify       who is told of its final state: a webhook's URL, or {"url" or "to",
                 "on": [final states], "after": N}: "to" is an address the master's
                 notify_command is given, "after" (a group's) tells once N jobs of its
                 tree finished (jqueue.notify)

This module checks their shapes (a caller's error names the job and the option); whether
a parent names a group is the queue's to say, under its lock.
"""

import urllib.parse

from jqueue import constants, errors, ptypes
from jqueue.grouptree import check_reference

#: The final states a job's webhook may be told of (its notify's "on"; all by default).
NOTIFY_STATES = (constants.JOB_STATUS_SUCCESS, constants.JOB_STATUS_ERROR,
                 constants.JOB_STATUS_CANCELED)
NOTIFY_URL_MAX = 2048
NOTIFY_TO_MAX = 254  # an e-mail address's longest
NOTIFY_AFTER_MAX = 10 ** 9
#: Options a submitted job may have (besides its token).
JOB_OPTIONS = ("parent", "not_before", "start_in", "notify")


def given(parent=None, not_before=None, start_in=None, notify=None):
    """submit_job's options as an object (None if none is given)."""
    options = {key: value for key, value in (("parent", parent), ("not_before", not_before),
                                             ("start_in", start_in), ("notify", notify))
               if value is not None}
    return options or None


def check(options, count, single):
    """options (a list of one object or None per job, or None) as a list of count
    objects; OpPrereqError naming the job and the option if malformed."""
    if options is None:
        return [{}] * count
    if not isinstance(options, (list, tuple)) or len(options) != count:
        raise errors.OpPrereqError("options must be a list of one object (or null) per job, "
                                   "got %s" % ptypes._short(options), constants.ECODE_INVAL)
    checked = []
    for index, option in enumerate(options):
        label = "" if single else "job %d: " % index
        if option is None:
            checked.append({})
            continue
        if not isinstance(option, dict) or set(option) - set(JOB_OPTIONS):
            raise errors.OpPrereqError("%soptions must be an object with the keys %s, got %s"
                                       % (label, ", ".join(JOB_OPTIONS),
                                          ptypes._short(option)), constants.ECODE_INVAL)
        checked.append(_checked(option, label, single))
    return checked


def _checked(option, label, single):
    option = {key: value for key, value in option.items() if value is not None}
    if "parent" in option:
        try:
            option["parent"] = check_reference(option["parent"], relative=not single)
        except ValueError as err:
            raise errors.OpPrereqError(label + str(err), constants.ECODE_INVAL) from None
    if "not_before" in option and "start_in" in option:
        raise errors.OpPrereqError("%sgive not_before or start_in, not both" % label,
                                   constants.ECODE_INVAL)
    for key in ("not_before", "start_in"):
        if key in option:
            try:
                option[key] = ptypes.NonNegativeNumber.check(option[key])
            except ValueError as err:
                raise errors.OpPrereqError("%s%s %s (seconds)" % (label, key, err),
                                           constants.ECODE_INVAL) from None
    if "notify" in option:
        try:
            option["notify"] = check_notify(option["notify"])
        except ValueError as err:
            raise errors.OpPrereqError(label + str(err), constants.ECODE_INVAL) from None
    return option


def start_time(option, now):
    """The not_before of a job submitted with option at now (None: no start time)."""
    if "start_in" in option:
        return now + option["start_in"]
    return option.get("not_before")


def check_notify(value):
    """A notify option normalized to {"url" or "to", "on": [states]} and "after" if given:
    a URL (every final state), or an object; ValueError saying what is wrong."""
    if isinstance(value, str):
        value = {"url": value}
    if (not isinstance(value, dict) or set(value) - {"url", "to", "on", "after"}
            or ("url" in value) == ("to" in value)):
        raise ValueError("notify must be an http(s) URL or an object with url or to (one "
                         "of them), and on and after if wanted, not %r" % (value,))
    checked = {"url": _notify_url(value["url"])} if "url" in value else {
        "to": _notify_to(value["to"])}
    after = value.get("after")
    if after is not None and (not isinstance(after, int) or isinstance(after, bool)
                              or not 0 < after <= NOTIFY_AFTER_MAX):
        raise ValueError("notify's after must be a number of jobs (1 or more), not %r"
                         % (after,))
    on = value.get("on", list(NOTIFY_STATES))
    if isinstance(on, str):
        on = [part.strip() for part in on.split(",") if part.strip()]
    if (not isinstance(on, list) or not (on or after)
            or not all(isinstance(state, str) and state in NOTIFY_STATES for state in on)):
        raise ValueError("notify's on must name final states among %s%s, not %r"
                         % (", ".join(NOTIFY_STATES),
                            "" if after else " (none only with after)", on))
    checked["on"] = [state for state in NOTIFY_STATES if state in on]
    if after is not None:
        checked["after"] = after
    return checked


def _notify_url(url):
    if not isinstance(url, str) or not url or len(url) > NOTIFY_URL_MAX:
        raise ValueError("notify's url must be a URL of at most %d characters, not %r"
                         % (NOTIFY_URL_MAX, url))
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
            c in url for c in "\r\n\0 "):
        raise ValueError("notify's url must be an http:// or https:// URL with a host, not %r"
                         % url)
    return url


def _notify_to(to):
    """An address for the notify command: printable, no spaces, not an option."""
    if (not isinstance(to, str) or not to or len(to) > NOTIFY_TO_MAX or to.startswith("-")
            or not to.isprintable() or any(c.isspace() for c in to)):
        raise ValueError("notify's to must be an address (at most %d printable characters, "
                         "no spaces, not beginning with -), not %r" % (NOTIFY_TO_MAX, to))
    return to

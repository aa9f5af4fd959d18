"""A job's own options at submit: its group (``parent``) and its start time.

Besides its opcodes and its idempotency token, a submitted job may have:

    parent       the group it joins: a job id (negative in SubmitManyJobs: relative, -1
                 is the job just before in the request), a group title, or a path of
                 titles from the root ``a|b`` (jqueue.grouptree resolves it)
    not_before   epoch seconds before which it does not start
    start_in     seconds from the submit before which it does not start (the master's
                 clock counts, not the client's)

This module checks their shapes (a caller's error names the job and the option); whether
a parent names a group is the queue's to say, under its lock.
"""

from jqueue import constants, errors, ptypes
from jqueue.grouptree import check_reference

#: Options a submitted job may have (besides its token).
JOB_OPTIONS = ("parent", "not_before", "start_in")


def given(parent=None, not_before=None, start_in=None):
    """submit_job's options as an object (None if none is given)."""
    options = {key: value for key, value in (("parent", parent), ("not_before", not_before),
                                             ("start_in", start_in)) if value is not None}
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
    return option


def start_time(option, now):
    """The not_before of a job submitted with option at now (None: no start time)."""
    if "start_in" in option:
        return now + option["start_in"]
    return option.get("not_before")

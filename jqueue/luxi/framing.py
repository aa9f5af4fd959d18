"""LUXI framing: bytes to messages and back, requests and responses as JSON objects.

A LUXI message is UTF-8 JSON followed by one byte 0x03 (``constants.LUXI_EOM``). This
module knows nothing of jobs nor of the network: the server and the client feed it bytes
and hand it Python values.
"""

from jqueue import constants, errors, serializer

EOM = constants.LUXI_EOM


class MessageBuffer:
    """Collects bytes and yields complete messages, refusing one longer than max_size."""

    def __init__(self, max_size):
        self.max_size = max_size
        self._parts = []
        self._size = 0
        self.failed = False

    @property
    def buffered(self):
        """How many bytes of an unfinished message are held."""
        return self._size

    def feed(self, data):
        """Add data; yield each message (bytes, without terminator) it completes.

        Iterate to the end: the data is consumed as the iteration proceeds. Raises
        ProtocolError as soon as a message grows beyond max_size; the buffer then
        drops what it held and refuses any further data.
        """
        if self.failed:
            raise errors.ProtocolError("message exceeds %d bytes" % self.max_size)
        start = 0
        while True:
            end = data.find(EOM, start)
            if end < 0:
                break
            self._append(data[start:end])
            yield self._take()
            start = end + 1
        self._append(data[start:])

    def _append(self, chunk):
        if not chunk:
            return
        self._size += len(chunk)
        if self._size > self.max_size:
            self._parts, self._size, self.failed = [], 0, True
            raise errors.ProtocolError("message exceeds %d bytes" % self.max_size)
        self._parts.append(bytes(chunk))

    def _take(self):
        message = b"".join(self._parts)
        self._parts, self._size = [], 0
        return message


def encode_message(obj):
    """Serialize obj as one LUXI message (JSON bytes and the terminator)."""
    return serializer.dumps_bytes(obj) + EOM


def decode_message(data):
    """Parse one message (bytes without terminator) as JSON; ParseError if it is not."""
    return serializer.loads(data)


def parse_request(data):
    """Return (method, args) of a request message; RequestError naming what is wrong.

    Keys other than method and args (such as Ganeti's "version") are ignored; JSON
    whitespace around the object (real clients send a newline) is accepted. An object
    with a duplicate key, anywhere in the request, is refused.
    """
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as err:
        raise errors.RequestError("request is not valid UTF-8: %s" % err) from None
    try:
        request = serializer.loads(text, unique_keys=True)
    except errors.ParseError as err:
        raise errors.RequestError("request is not valid JSON: %s" % err) from None
    if not isinstance(request, dict):
        raise errors.RequestError("request must be a JSON object, got %s" % _kind(request))
    method = _member(request, constants.LUXI_KEY_METHOD, str, "a string")
    args = _member(request, constants.LUXI_KEY_ARGS, list, "a list")
    return method, args


def _member(request, key, kind, desc):
    if key not in request:
        raise errors.RequestError("request has no '%s'" % key)
    value = request[key]
    if not isinstance(value, kind):
        raise errors.RequestError("request '%s' must be %s, got %s" % (key, desc, _kind(value)))
    return value


def encode_request(method, args):
    """Serialize a request message (without a version: the server ignores it)."""
    return encode_message({constants.LUXI_KEY_METHOD: method, constants.LUXI_KEY_ARGS: args})


def encode_response(success, result):
    """Serialize a response message: {"success": bool, "result": value}."""
    return serializer.dumps_answer({constants.LUXI_KEY_SUCCESS: bool(success),
                                    constants.LUXI_KEY_RESULT: result}) + EOM


def parse_response(data):
    """Return (success, result) of a response message; ProtocolError if malformed."""
    try:
        response = serializer.loads(data)
    except errors.ParseError as err:
        raise errors.ProtocolError("response is not valid JSON: %s" % err) from None
    if (not isinstance(response, dict) or constants.LUXI_KEY_RESULT not in response
            or not isinstance(response.get(constants.LUXI_KEY_SUCCESS), bool)):
        raise errors.ProtocolError("response must be an object with a boolean 'success' "
                                   "and a 'result', got %s" % _short(response))
    return response[constants.LUXI_KEY_SUCCESS], response[constants.LUXI_KEY_RESULT]


def _kind(value):
    """Name the JSON type of value for an error message."""
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
             str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _short(value, limit=60):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."

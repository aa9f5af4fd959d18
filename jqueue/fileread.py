"""Reading a file whole, and writing a buffer whole, with plain system calls.

Python's buffered open adds five system calls to every small file (two fstat, an ioctl
and two lseek) to the open, read and close it needs. In a daemon each system call may
hand the GIL to another thread and wait to take it back: jq-masterd reads three small
files on its reactor thread for every command attempt (/proc/PID/stat at the launch, the
pid and result files at its end), and read this way, 1,000 `true` jobs cost it 3.38-3.60
ms of CPU each instead of 3.69-4.12. The queue's store reads its job files so too.
"""

import os

#: The first read's size, and the most one read asks for: after a read that got all it
#: asked for, the next asks for four times as much (a file of a few MiB takes a handful).
READ_CHUNK = 64 * 1024
READ_CHUNK_MAX = 16 * 1024 * 1024


def read_file(path):
    """The bytes of path: open, reads until one returns nothing, close. OSError as
    open(2) and read(2) fail (FileNotFoundError, IsADirectoryError, EMFILE)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks, size = [], READ_CHUNK
        while True:
            chunk = os.read(fd, size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            if len(chunk) == size:
                size = min(size * 4, READ_CHUNK_MAX)
    finally:
        os.close(fd)


def write_all(fd, data):
    """Write every byte of data at fd's position (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

"""Peers written from the wire alone, for the fault suite and the soak.

* clever-show as the original messaging.py frames it: a u16 big-endian header length, a
  JSON header with its five keys, the JSON content; requests with four-character ids and
  no "error-responses" header (so Tether answers them as it answers the original).
* socket_protocol as docs/protocols/socket-protocol.md §2 frames it: "SP", a u32
  big-endian body length, the JSON body, the body's CRC-32 (u32 big-endian).
"""
import binascii
import json
import struct


def read_exact(s, n):
    out = b''
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("the server closed the connection")
        out += chunk
    return out


def clever_frame(kind, content):
    body = json.dumps(content).encode()
    header = json.dumps({'byteorder': 'little', 'content-type': 'json',
                         'content-encoding': 'utf-8', 'content-length': len(body),
                         'message-type': kind}).encode()
    return struct.pack('>H', len(header)) + header + body


def clever_echo(s, i):
    """One `echo` request as the original sends it; returns None, or what was wrong."""
    rid = f'{i % 10000:04d}'
    s.sendall(clever_frame('request', {'requested_value': 'echo', 'request_id': rid,
                                       'args': [i], 'kwargs': {}}))
    (h,) = struct.unpack('>H', read_exact(s, 2))
    header = json.loads(read_exact(s, h))
    content = json.loads(read_exact(s, header['content-length']))
    if header['message-type'] != 'response' or header.get('request_id') != rid \
            or content != {'value': {'args': [i], 'kwargs': {}}}:
        return f"clever-show echo {i}: {header!r} {content!r}"
    return None


READ_REQUEST, READ_RESPONSE = 10, 11


def sp_frame(sid, did, data, status=0):
    body = json.dumps({'status': status, 'service_id': sid, 'data_id': did, 'data': data},
                      separators=(',', ':')).encode()
    return b'SP' + struct.pack('>I', len(body)) + body + struct.pack('>I', binascii.crc32(body))


def sp_read(s):
    """The next message; raises ValueError on a bad magic or checksum."""
    head = read_exact(s, 6)
    if head[:2] != b'SP':
        raise ValueError(f"not a socket_protocol frame: {head!r}")
    (n,) = struct.unpack('>I', head[2:])
    body = read_exact(s, n)
    (crc,) = struct.unpack('>I', read_exact(s, 4))
    if crc != binascii.crc32(body):
        raise ValueError("checksum mismatch")
    return json.loads(body)


def sp_echo(s, i):
    """A read-data request that `tether serve`'s socket_protocol listener echoes."""
    s.sendall(sp_frame(READ_REQUEST, 1, {'i': i}))
    m = sp_read(s)
    if (m['status'], m['service_id'], m['data_id'], m.get('data')) != (0, READ_RESPONSE, 1, {'i': i}):
        return f"socket_protocol read {i}: {m!r}"
    return None

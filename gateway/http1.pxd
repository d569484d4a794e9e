cdef class _Connection:
    cdef public _Pool pool
    cdef public object transport
    cdef public _Response response
    cdef public bint closed
    cdef public bint slot_held
    cdef public Py_ssize_t used
    cdef public double idle_since
    cdef public object _drain

cdef class _Response:
    cdef public _Connection _conn
    cdef public object parser
    cdef public bint _skip_body
    cdef public double _timeout
    cdef public object _head_fut
    cdef public list _raw
    cdef public object _headers
    cdef public Py_ssize_t _header_bytes
    cdef public bint _interim
    cdef public object _chunks
    cdef public Py_ssize_t _buffered
    cdef public bint _paused
    cdef public bint _unbounded
    cdef public object _waiter
    cdef public object _error
    cdef public bint _eof_body
    cdef public int status
    cdef public object reason
    cdef public object content_length
    cdef public bint got_bytes
    cdef public bint done
    cdef public bint keep_alive
    cdef public bint reusable
    cdef public bint sent

cdef class _Pool:
    cdef public object name
    cdef public object origin
    cdef public object host
    cdef public object port
    cdef public object ssl
    cdef public object host_header
    cdef public Py_ssize_t limit
    cdef public double keepalive
    cdef public double pool_timeout
    cdef public object loop
    cdef public list idle
    cdef public Py_ssize_t count
    cdef public object waiters
    cdef public set connections
    cdef public bint closed

cdef class _Request:
    cdef public object url
    cdef public list headers
    cdef public object head_bytes
    cdef public object content_length
    cdef public object authorization
    cdef public object request_id
    cdef public object host
    cdef public list forwarded_for
    cdef public bint cold
    cdef public bint answered
    cdef public list body
    cdef public object method
    cdef public object target
    cdef public bint keep_alive
    cdef public object end

cdef class _Connection:
    cdef public object front
    cdef public object transport
    cdef public object remote
    cdef public bytearray buf
    cdef public object parser
    cdef public _Request req
    cdef public bint busy
    cdef public double last
    cdef public double since
    cdef public Py_ssize_t _fed
    cdef public bint _broken
    cdef public bint _reading_paused
    cdef public bint _writing_paused
    cdef public object _drain

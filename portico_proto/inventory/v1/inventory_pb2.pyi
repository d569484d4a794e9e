from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Line(_message.Message):
    __slots__ = ("sku", "quantity")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("order_id", "lines")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    lines: _containers.RepeatedCompositeFieldContainer[Line]
    def __init__(self, order_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[Line, _Mapping]]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class GetStockRequest(_message.Message):
    __slots__ = ("sku",)
    SKU_FIELD_NUMBER: _ClassVar[int]
    sku: str
    def __init__(self, sku: _Optional[str] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("order_id", "status", "lines")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[Reservation.Status]
        RESERVED: _ClassVar[Reservation.Status]
        COMMITTED: _ClassVar[Reservation.Status]
        RELEASED: _ClassVar[Reservation.Status]
        REJECTED: _ClassVar[Reservation.Status]
    STATUS_UNSPECIFIED: Reservation.Status
    RESERVED: Reservation.Status
    COMMITTED: Reservation.Status
    RELEASED: Reservation.Status
    REJECTED: Reservation.Status
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    status: Reservation.Status
    lines: _containers.RepeatedCompositeFieldContainer[Line]
    def __init__(self, order_id: _Optional[str] = ..., status: _Optional[_Union[Reservation.Status, str]] = ..., lines: _Optional[_Iterable[_Union[Line, _Mapping]]] = ...) -> None: ...

class StockLevel(_message.Message):
    __slots__ = ("sku", "on_hand", "reserved", "available")
    SKU_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    sku: str
    on_hand: int
    reserved: int
    available: int
    def __init__(self, sku: _Optional[str] = ..., on_hand: _Optional[int] = ..., reserved: _Optional[int] = ..., available: _Optional[int] = ...) -> None: ...

"""Record Access Control Point (0x2A52), as the Glucose and CGM services use it.

GLS 1.0 §3.9 / CGMS 1.0.1 §3.9: op code, operator, operand. Glucose filters by sequence
number (filter type 1); CGM filters by time offset (filter type 1 as well, in CGMS).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from device_adapters.ble import codec
from device_adapters.ble.codec import Reader
from device_adapters.ble.uuids import Char

RACP = str(Char.RECORD_ACCESS_CONTROL_POINT)


class RacpOpCode(IntEnum):
    REPORT_STORED_RECORDS = 1
    DELETE_STORED_RECORDS = 2
    ABORT_OPERATION = 3
    REPORT_NUMBER_OF_STORED_RECORDS = 4
    NUMBER_OF_STORED_RECORDS_RESPONSE = 5
    RESPONSE_CODE = 6


class RacpOperator(IntEnum):
    NULL = 0
    ALL_RECORDS = 1
    LESS_THAN_OR_EQUAL_TO = 2
    GREATER_THAN_OR_EQUAL_TO = 3
    WITHIN_RANGE_OF = 4
    FIRST_RECORD = 5
    LAST_RECORD = 6


class FilterType(IntEnum):
    """Glucose: 1 sequence number, 2 user facing time. CGM: 1 time offset."""

    SEQUENCE_NUMBER_OR_TIME_OFFSET = 1
    USER_FACING_TIME = 2


class RacpResponseCode(IntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


@dataclass(frozen=True, slots=True, kw_only=True)
class RacpRequest:
    """A request a collector writes. `operand` (and `operand_max` for a range) are uint16
    sequence numbers (glucose) or time offsets in minutes (CGM)."""

    op_code: RacpOpCode
    operator: RacpOperator
    filter_type: FilterType | None = None
    operand: int | None = None
    operand_max: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RacpResponse:
    """The indication ending a procedure: success or failure of `request_op_code`."""

    request_op_code: RacpOpCode | int
    response_code: RacpResponseCode | int

    @property
    def ok(self) -> bool:
        # "No records found" ends a resume with nothing new: not a failure.
        return self.response_code in (RacpResponseCode.SUCCESS, RacpResponseCode.NO_RECORDS_FOUND)


@dataclass(frozen=True, slots=True, kw_only=True)
class RacpNumberOfRecords:
    count: int


RacpMessage = RacpRequest | RacpResponse | RacpNumberOfRecords
_E = TypeVar("_E", bound=IntEnum)

_SEQ = FilterType.SEQUENCE_NUMBER_OR_TIME_OFFSET


def report_all() -> RacpRequest:
    return RacpRequest(op_code=RacpOpCode.REPORT_STORED_RECORDS, operator=RacpOperator.ALL_RECORDS)


def report_from(low: int) -> RacpRequest:
    """Report records with sequence number (glucose) or time offset (CGM) >= `low`."""
    return RacpRequest(
        op_code=RacpOpCode.REPORT_STORED_RECORDS,
        operator=RacpOperator.GREATER_THAN_OR_EQUAL_TO,
        filter_type=_SEQ,
        operand=low,
    )


def report_number(
    operator: RacpOperator = RacpOperator.ALL_RECORDS, low: int | None = None
) -> RacpRequest:
    return RacpRequest(
        op_code=RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS,
        operator=operator,
        filter_type=_SEQ if low is not None else None,
        operand=low,
    )


def abort() -> RacpRequest:
    return RacpRequest(op_code=RacpOpCode.ABORT_OPERATION, operator=RacpOperator.NULL)


def delete_all() -> RacpRequest:
    return RacpRequest(op_code=RacpOpCode.DELETE_STORED_RECORDS, operator=RacpOperator.ALL_RECORDS)


def encode_racp(message: RacpMessage) -> bytes:
    if isinstance(message, RacpResponse):
        return bytes(
            [RacpOpCode.RESPONSE_CODE, RacpOperator.NULL, message.request_op_code]
        ) + codec.u8(message.response_code)
    if isinstance(message, RacpNumberOfRecords):
        return bytes([RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, RacpOperator.NULL]) + codec.u16(
            message.count
        )
    out = bytes([message.op_code, message.operator])
    if message.filter_type is not None:
        out += codec.u8(message.filter_type)
        if message.operand is not None:
            out += codec.u16(message.operand)
        if message.operand_max is not None:
            out += codec.u16(message.operand_max)
    return out


def parse_racp(data: bytes) -> RacpMessage:
    """Parse any RACP value: a request (as a peripheral sees it) or a response."""
    r = Reader(RACP, data)
    raw_op = r.u8("op code")
    raw_operator = r.u8("operator")
    try:
        op = RacpOpCode(raw_op)
        operator = RacpOperator(raw_operator)
    except ValueError:
        raise r.fail(f"unknown op code {raw_op} / operator {raw_operator}", 0) from None
    if op is RacpOpCode.RESPONSE_CODE:
        request = r.u8("request op code")
        code = r.u8("response code")
        r.end()
        return RacpResponse(
            request_op_code=_maybe(RacpOpCode, request),
            response_code=_maybe(RacpResponseCode, code),
        )
    if op is RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        count = r.u16("number of records")
        r.end()
        return RacpNumberOfRecords(count=count)
    filter_type: FilterType | None = None
    low = high = None
    if operator in (
        RacpOperator.LESS_THAN_OR_EQUAL_TO,
        RacpOperator.GREATER_THAN_OR_EQUAL_TO,
        RacpOperator.WITHIN_RANGE_OF,
    ):
        raw_filter = r.u8("filter type")
        try:
            filter_type = FilterType(raw_filter)
        except ValueError:
            raise r.fail(f"unknown filter type {raw_filter}", 2) from None
        if filter_type is FilterType.USER_FACING_TIME:
            raise r.fail("user facing time filters are not supported", 2)
        low = r.u16("operand")
        if operator is RacpOperator.WITHIN_RANGE_OF:
            high = r.u16("operand (maximum)")
    r.end()
    return RacpRequest(
        op_code=op, operator=operator, filter_type=filter_type, operand=low, operand_max=high
    )


def _maybe(enum: type[_E], value: int) -> _E | int:
    try:
        return enum(value)
    except ValueError:
        return value

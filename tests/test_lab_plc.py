"""The lab PLC as a Modbus server, the RFB and RTSP parts, on loopback (no root needed).

The PLC process serves the register map of ``crane-reference.md`` through pymodbus; a
pymodbus client reads and writes it the way the CMS, the EWS and an intruder do.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from cranewatch.lab.parts.camera import CameraSession
from cranewatch.lab.parts.common import dns_query_packet
from cranewatch.lab.physics import from_u16


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the part exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def plc() -> Iterator[ModbusTcpClient]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "cranewatch.lab.plc", "--host", "127.0.0.1",
                                "--port", str(port), "--seed", "7"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        assert client.connect()
        yield client
        client.close()
    finally:
        process.terminate()
        process.wait(10)


def test_input_registers_hold_the_process_image(plc: ModbusTcpClient) -> None:
    first = plc.read_input_registers(0, count=12, device_id=1).registers
    time.sleep(0.5)
    second = plc.read_input_registers(0, count=12, device_id=1).registers
    assert len(first) == 12
    assert 3 <= (second[0] - first[0]) % 65536 <= 7, "heartbeat +1 per 100 ms cycle"
    assert 0 <= second[1] <= 650  # hoist_load
    assert -2000 <= from_u16(second[2]) <= 4500  # hoist_height
    assert 0 < second[9] <= 400 and 0 < second[10] <= 400  # both anemometers


def test_discrete_inputs_holding_registers_and_coils(plc: ModbusTcpClient) -> None:
    assert len(plc.read_discrete_inputs(0, count=7, device_id=1).bits) >= 7
    assert plc.read_holding_registers(0, count=4, device_id=1).registers == [715, 200, 100, 100]
    assert plc.read_coils(0, count=2, device_id=1).bits[:2] == [False, False]


def test_addresses_beyond_the_map_are_refused(plc: ModbusTcpClient) -> None:
    reply = plc.read_input_registers(10, count=5, device_id=1)
    assert reply.isError() and reply.exception_code == 2  # illegal data address
    assert plc.read_holding_registers(4, count=1, device_id=1).isError()


def test_device_identification_answers_fc43(plc: ModbusTcpClient) -> None:
    info = plc.read_device_information(read_code=1, object_id=0, device_id=1).information
    assert info[0] == b"ZPMC Electric" and info[2].startswith(b"V3.")


def test_writes_are_held_and_the_fault_reset_pulse_clears(plc: ModbusTcpClient) -> None:
    assert not plc.write_coil(0, True, device_id=1).isError()
    assert not plc.write_register(0, 900, device_id=1).isError()
    assert not plc.write_coil(1, True, device_id=1).isError()
    time.sleep(0.3)
    assert plc.read_holding_registers(0, count=4, device_id=1).registers == [900, 200, 100, 100]
    assert plc.read_coils(0, count=2, device_id=1).bits[:2] == [True, False]
    plc.write_coil(0, False, device_id=1)
    plc.write_register(0, 715, device_id=1)


def test_rfb_session_over_loopback(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cranewatch.lab.parts.rfb", "server",
                               "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, server)
        client = subprocess.run([sys.executable, "-m", "cranewatch.lab.parts.rfb", "client",
                                 "--host", "127.0.0.1", "--port", str(port),
                                 "--until", str(time.time() + 2.0)],
                                capture_output=True, text=True, timeout=30)
        assert client.returncode == 0, client.stdout + client.stderr
        assert "types [1] result 0 screen 1024x768 b'STS-07 CMS HMI'" in client.stdout
    finally:
        server.terminate()
        log = server.communicate(timeout=10)[0].decode()
    assert "security 1 shared 1" in log
    assert "encodings (2, 0)" in log
    assert "key down 0x64" in log  # 'd' of the vendor typing "diag"


def test_camera_streams_jpeg_over_rtsp_until_teardown() -> None:
    port = free_port()
    camera = subprocess.Popen([sys.executable, "-m", "cranewatch.lab.parts.camera", "server",
                               "--name", "spreader", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, camera)
        session = CameraSession("127.0.0.1", logging.getLogger("test"), port=port)
        session.start()
        reader = threading.Thread(target=session.read_frames)
        reader.start()
        time.sleep(1.6)
        session.teardown()
        reader.join(5)
        session.close()
        assert not reader.is_alive(), "the camera did not answer TEARDOWN"
        assert 3 <= session.frames <= 5  # 2 frames per second
    finally:
        camera.terminate()
        log = camera.communicate(timeout=10)[0].decode()
    for method in ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "TEARDOWN"):
        assert f"{method} rtsp://127.0.0.1:{port}/live" in log


def test_dns_query_bytes() -> None:
    # dig-style query for a.b with id 0x1234, RD set, one question, type A, class IN
    assert dns_query_packet("a.b", 0x1234) == bytes.fromhex(
        "1234 0100 0001 0000 0000 0000 0161 0162 00 0001 0001".replace(" ", ""))

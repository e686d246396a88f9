"""MQTT decoder: 3.1 packets of Zeek's mqtt.pcap (fields as tshark shows) and MQTT 5 literals."""

from __future__ import annotations

import pytest

from cranewatch.protocols.mqtt import (
    MqttConnectRequest,
    MqttConnectResponse,
    MqttControlRequest,
    MqttDecoder,
    MqttPublishRequest,
    MqttSubscribeRequest,
)
from proto_helpers import context, feed_all, h, problems_of

CONNECT_31 = h("102500064d51497364700302000500177061686f2f333441414535344137354438333935363645")
CONNACK = h("20020000")
SUBSCRIBE = h("82100001000b53616d706c65546f70696300")
PUBLISH = h("3130000b53616d706c65546f70696348656c6c6f2066726f6d20746865205061686f20626c6f636b696e"
            "6720636c69656e74")


def test_mqtt_31_session_from_zeek_trace() -> None:
    events = feed_all(MqttDecoder(context(1883)), (True, CONNECT_31), (False, CONNACK),
                      (True, SUBSCRIBE), (False, PUBLISH))
    connect, connack, subscribe, publish = events
    assert isinstance(connect, MqttConnectRequest)
    assert (connect.client_id, connect.protocol_name, connect.protocol_level) == (
        "paho/34AAE54A75D839566E", "MQIsdp", 3)
    assert not connect.username_present and not connect.password_present
    assert isinstance(connack, MqttConnectResponse) and connack.return_code == 0
    assert isinstance(subscribe, MqttSubscribeRequest)
    assert (subscribe.packet_id, subscribe.topics, subscribe.qos) == (1, ("SampleTopic",), (0,))
    assert isinstance(publish, MqttPublishRequest) and not publish.from_client
    assert (publish.topic, publish.qos) == ("SampleTopic", 0)
    assert publish.payload == b"Hello from the Paho blocking client"


def test_mqtt5_connect_with_credentials_and_publish_with_properties() -> None:
    variable = h("0004") + b"MQTT" + h("05 c2 003c 00")  # level 5, user+password+clean, no props
    payload = h("0004") + b"gw01" + h("0005") + b"crane" + h("0002") + b"pw"
    connect = bytes([0x10, len(variable) + len(payload)]) + variable + payload
    body = h("000a") + b"sts07/load" + h("0001") + h("02 01 01") + b"42.5"
    publish = bytes([0x32, len(body)]) + body  # QoS 1; properties: payload format indicator 1
    decoder = MqttDecoder(context(1883))
    connect_event, publish_event = feed_all(decoder, (True, connect), (True, publish))
    assert isinstance(connect_event, MqttConnectRequest)
    assert connect_event.protocol_level == 5 and connect_event.client_id == "gw01"
    assert connect_event.username_present and connect_event.username == "crane"
    assert connect_event.password_present
    assert isinstance(publish_event, MqttPublishRequest)
    assert (publish_event.topic, publish_event.qos, publish_event.packet_id) == ("sts07/load", 1, 1)
    assert publish_event.payload == b"42.5"  # the 2 property bytes are skipped


def test_ping_is_a_control_event() -> None:
    (event,) = MqttDecoder(context(1883)).feed(True, h("c000"), 1.0, 1)
    assert isinstance(event, MqttControlRequest) and event.type_name == "pingreq"


@pytest.mark.parametrize("cut", [3, 6, 10, 20])
def test_truncated_connect_is_a_decode_error(cut: int) -> None:
    broken = bytes([0x10, cut - 2]) + CONNECT_31[2:cut]
    assert problems_of(MqttDecoder(context(1883)), True, broken, 1.0, 1)

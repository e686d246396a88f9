// Cellular modem tooling: AT command sets and QMI/MBIM control inside programs and scripts.

rule modem_at_commands
{
    meta:
        scope = "any"
        category = "oob-connectivity"
        severity = "high"
        description = "cellular modem AT commands (APN, PIN or data call)"
        remedy = "Remove the program or script and any modem; the crane's only uplink is its gateway."
        technique = "T0883"
    strings:
        $apn = /AT\+CGDCONT=[0-9],"IP/ nocase
        $pin = /AT\+CPIN="?[0-9]{4,8}/ nocase
        $dial = "ATD*99" nocase
        $qcrmcall = "AT$QCRMCALL" nocase
        $ndis = "AT^NDISDUP" nocase
    condition:
        any of them
}

rule qmi_mbim_client
{
    meta:
        scope = "binary"
        category = "oob-connectivity"
        severity = "medium"
        description = "QMI/MBIM modem control program"
        remedy = "Remove it unless the contract names a modem."
        technique = "T0883"
    strings:
        $qmi1 = "--wds-start-network" ascii
        $qmi2 = "qmi_wwan" ascii
        $mbim = "--connect=apn=" ascii
        $uqmi = "uqmi" ascii
    condition:
        2 of them
}

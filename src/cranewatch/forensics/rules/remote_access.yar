// Remote-desktop, tunnel and reverse-proxy programs, recognised inside binaries.

rule teamviewer_binary
{
    meta:
        scope = "binary"
        category = "remote-access-tool"
        severity = "high"
        description = "TeamViewer remote-control program"
        remedy = "Remove TeamViewer; vendor access goes through the port's remote-access gateway."
        technique = "T0822"
    strings:
        $a = "TeamViewer" ascii wide
        $b = "teamviewerd" ascii
        $c = "router.teamviewer.com" ascii nocase
        $d = "TeamViewer_Service" ascii wide
    condition:
        2 of them
}

rule anydesk_binary
{
    meta:
        scope = "binary"
        category = "remote-access-tool"
        severity = "high"
        description = "AnyDesk remote-control program"
        remedy = "Remove AnyDesk; vendor access goes through the port's remote-access gateway."
        technique = "T0822"
    strings:
        $a = "AnyDesk" ascii wide
        $b = "net.anydesk.com" ascii nocase
        $c = "anydesk.com" ascii nocase
    condition:
        $a and ($b or $c)
}

rule rustdesk_binary
{
    meta:
        scope = "binary"
        category = "remote-access-tool"
        severity = "high"
        description = "RustDesk remote-control program"
        remedy = "Remove RustDesk; vendor access goes through the port's remote-access gateway."
        technique = "T0822"
    strings:
        $a = "rustdesk" ascii nocase
        $b = "hbbs" ascii
        $c = "rs-ny.rustdesk.com" ascii
    condition:
        $a and ($b or $c)
}

rule tunnel_binary
{
    meta:
        scope = "binary"
        category = "remote-access-tool"
        severity = "high"
        description = "reverse tunnel program (frp, ngrok or chisel)"
        remedy = "Remove the tunnel program; it bypasses the crane firewall."
        technique = "T0884"
    strings:
        $frp = "github.com/fatedier/frp" ascii
        $ngrok1 = "ngrok.com" ascii
        $ngrok2 = "tunnel.us.ngrok.com" ascii
        $ngrok3 = "ngrok-agent" ascii
        $chisel = "github.com/jpillora/chisel" ascii
    condition:
        $frp or $chisel or 2 of ($ngrok*)
}

rule vnc_server_binary
{
    meta:
        scope = "binary"
        category = "remote-access-tool"
        severity = "medium"
        description = "VNC server program"
        remedy = "Remove the VNC server or bind it to the HMI's local display only."
        technique = "T0822"
    strings:
        $rfb = "RFB 003.00" ascii
        $a = "x11vnc" ascii
        $b = "libvncserver" ascii nocase
    condition:
        $rfb and ($a or $b)
}

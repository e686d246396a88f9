// Reverse shells and download-and-run one-liners in scripts and configs (text files only).

rule reverse_shell_oneliner
{
    meta:
        scope = "text"
        category = "backdoor"
        severity = "critical"
        description = "reverse shell one-liner"
        remedy = "Remove the script or line and find out who planted it; re-image if unsure."
        technique = "T0807,T0869"
    strings:
        $devtcp = /\/dev\/(tcp|udp)\/[A-Za-z0-9.\-]+\/[0-9]{1,5}/
        $bash_i = /bash -i >& ?\/dev\//
        $nc_e = /\b(nc|ncat|netcat)( [^|;&\n]*)? -[a-z]*e (\/bin\/)?(ba)?sh/
        $socat = /socat [^\n]*exec:['"]?(\/bin\/)?(ba)?sh/ nocase
        $pty = "pty.spawn(" ascii
        $fifo = /mkfifo [^\n]{1,80}\| ?(nc|ncat|netcat) /
    condition:
        any of them
}

rule download_and_run
{
    meta:
        scope = "text"
        category = "backdoor"
        severity = "high"
        description = "downloads code and pipes it into a shell"
        remedy = "Remove the line; software reaches a crane only through the port's change process."
        technique = "T0807"
    strings:
        $curl_sh = /(curl|wget)[^|\n]{1,200}\| ?(sudo )?(ba|da)?sh\b/
    condition:
        $curl_sh
}

<#
.SYNOPSIS
    Helpers of the wfpmon Hyper-V test kit (Prepare-TestVM.ps1, Invoke-WfpMonVmTest.ps1).

.DESCRIPTION
    RUNS ONLY ON A WINDOWS HOST WITH HYPER-V. It needs the Hyper-V role and its
    PowerShell module, an elevated session (Run as administrator), and a Windows 10/11
    or Windows Server 2016+ guest that is reached over PowerShell Direct
    (New-PSSession -VMName): no network between host and guest is used, but the
    guest account given as -Credential must be a local administrator of the guest.

    Nothing here can run on Linux; tests/vm checks this file statically there.

    The constants below mirror crates/wfpmon-core/src/catalog.rs and the package
    that `cargo make` builds (target\<profile>\wfpmon_package). tests/vm compares
    them with those sources, so edit them together.
#>

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$script:WfpMon = [ordered]@{
    ServiceName     = 'wfpmon'
    ImageName       = 'wfpmon.sys'
    InfName         = 'wfpmon.inf'
    CatalogFileName = 'wfpmon.cat'
    PackageDirName  = 'wfpmon_package'
    TestCertificate = 'WDRLocalTestCert.cer'
    WprProfileName  = 'wfpmon.wprp'
    DeviceName      = '\Device\WfpMon'
    EtwProviderName = 'wfpmon'
    EtwProviderGuid = 'ab0992a4-5b4d-595c-5337-c50e1d163b2f'
    ProviderKey     = '22f6984a-dd5f-4e7b-8dc7-ccbf8d377c66'
    SublayerKey     = 'acbbaa62-dc39-4d57-8e87-d4ee7642d8de'
    CalloutKeys     = [ordered]@{
        'wfpmon-stream-v4'           = 'ef20f00c-05ad-4188-99ac-e1cb6313d807'
        'wfpmon-stream-v6'           = '48c6f8d2-57b7-4f23-8f14-0d8a1fb7884d'
        'wfpmon-datagram-v4'         = 'cade8d40-541f-4de8-8f85-7d9fd29c531e'
        'wfpmon-datagram-v6'         = '869854f4-4872-4282-9f13-c8e973d5244c'
        'wfpmon-flow-established-v4' = '46f3c222-407a-4bd2-b877-610694255791'
        'wfpmon-flow-established-v6' = '1298a378-d458-41e3-8b3b-6de9dc80fcb9'
    }
}

# The three files a driver package must hold (the INF's CopyFiles source, the
# INF itself and the catalog that signs both).
$script:PackageFiles = @($script:WfpMon.ImageName, $script:WfpMon.InfName, $script:WfpMon.CatalogFileName)

# The driver reports through its TraceLogging (ETW) provider (src/trace.rs):
# EtwProviderName above, EtwProviderGuid derived from that name as TraceLogging
# does (tests/vm recomputes it). The kit enables all three keywords
# (0x1 LIFECYCLE, 0x2 ERRORS, 0x4 FLOWS) at level 5 (Verbose, which includes
# CalloutUnregisterAttempt) in a logman session of its own name.
$script:EtwKeywords = '0x7'
$script:EtwLevel = '0x5'
$script:EtwSessionName = 'wfpmon-vm-test'

# Events the kit's verdict looks at (names as written by src/trace.rs).
$script:EtwEventNames = @(
    'DriverEntry', 'DriverEntryStep', 'CalloutRegister', 'DriverEntryComplete', 'DriverEntryFailed',
    'Unload', 'TeardownBegins', 'FlowFailures', 'CalloutUnregisterAttempt', 'RemovalPass',
    'CalloutStillRegistered', 'CalloutReleasedWithFlowsOwed', 'CalloutUnregistered', 'FlowRecordsLeft',
    'TeardownStep',
    'TeardownComplete', 'FlowEstablished', 'FlowEnded'
)

# Debug Print Filter (optional, debug builds only): DbgPrint messages belong to
# component DEFAULT at DPFLTR_INFO_LEVEL (importance bit 0x8); a DEFAULT mask of
# 0xF shows levels error, warning, trace and info. The registry mask is read at
# boot. Release builds write no DbgPrint at all; the kit's verdict uses the ETW
# trace only.
$script:DebugPrintFilterKey = 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Debug Print Filter'
$script:DebugPrintDefaultMask = 0xF

$script:LogFile = $null

function Get-WfpMonConstant {
    <# .SYNOPSIS Names and keys of wfpmon (service, files, GUIDs). #>
    [CmdletBinding()]
    param()
    return $script:WfpMon
}

function Set-WfpMonLogFile {
    <# .SYNOPSIS Also append every Write-WfpMonLog line to this file. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$Path)
    $dir = Split-Path -Path $Path -Parent
    if ($dir -and -not (Test-Path -LiteralPath $dir)) {
        New-Item -ItemType Directory -Path $dir -Force | Out-Null
    }
    $script:LogFile = $Path
}

function Write-WfpMonLog {
    <# .SYNOPSIS A time-stamped progress line on the console (and in the log file). #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$Message,
        [ValidateSet('Info', 'Warn', 'Error')][string]$Level = 'Info'
    )
    $line = '[{0}] {1,-5} {2}' -f (Get-Date -Format 'HH:mm:ss'), $Level.ToUpperInvariant(), $Message
    switch ($Level) {
        'Warn' { Write-Host $line -ForegroundColor Yellow }
        'Error' { Write-Host $line -ForegroundColor Red }
        default { Write-Host $line }
    }
    if ($script:LogFile) {
        Add-Content -LiteralPath $script:LogFile -Value $line -Encoding UTF8
    }
}

function New-WfpMonTimeoutMessage {
    <#
    .SYNOPSIS
        The one wording of every wait of the kit that gives up: what it waited for,
        for how long, what it saw last, and the next thing to check.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$WaitedFor,
        [Parameter(Mandatory)][int]$Seconds,
        [Parameter(Mandatory)][AllowEmptyString()][string]$LastSeen,
        [Parameter(Mandatory)][string]$Next
    )
    if (-not $LastSeen) { $LastSeen = 'nothing (no answer at all)' }
    return "timed out after $Seconds s waiting for $WaitedFor; last seen: $LastSeen; next: $Next"
}

function Assert-WfpMonHost {
    <# .SYNOPSIS Throws unless this is an elevated Windows session with the Hyper-V module. #>
    [CmdletBinding()]
    param()
    if ([System.Environment]::OSVersion.Platform -ne [System.PlatformID]::Win32NT) {
        throw 'this kit runs only on a Windows host with Hyper-V'
    }
    $identity = [System.Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object System.Security.Principal.WindowsPrincipal($identity)
    if (-not $principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'run this from an elevated PowerShell (Run as administrator)'
    }
    if (-not (Get-Module -ListAvailable -Name Hyper-V)) {
        throw 'the Hyper-V PowerShell module is missing (enable Microsoft-Hyper-V-Management-PowerShell)'
    }
    Import-Module Hyper-V -ErrorAction Stop
}

function Assert-WfpMonPackage {
    <# .SYNOPSIS Throws unless PackagePath holds wfpmon.sys, wfpmon.inf and wfpmon.cat. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$PackagePath)
    if (-not (Test-Path -LiteralPath $PackagePath -PathType Container)) {
        throw "package folder $PackagePath does not exist (cargo make builds target\<profile>\$($script:WfpMon.PackageDirName))"
    }
    $missing = @($script:PackageFiles | Where-Object { -not (Test-Path -LiteralPath (Join-Path $PackagePath $_) -PathType Leaf) })
    if ($missing.Count -gt 0) {
        throw "package folder $PackagePath lacks $($missing -join ', ')"
    }
}

function Get-WfpMonVm {
    <# .SYNOPSIS The VM, or a clear error. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$VMName)
    $vm = Get-VM -Name $VMName -ErrorAction SilentlyContinue
    if ($null -eq $vm) {
        throw "no Hyper-V VM named '$VMName' on this host"
    }
    return $vm
}

function Start-WfpMonVm {
    <# .SYNOPSIS Starts the VM unless it is running already. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$VMName)
    $vm = Get-WfpMonVm -VMName $VMName
    if ($vm.State -ne 'Running') {
        Write-WfpMonLog "starting VM $VMName (state $($vm.State))"
        Start-VM -Name $VMName | Out-Null
    }
}

function Wait-WfpMonGuest {
    <#
    .SYNOPSIS
        Waits until PowerShell Direct answers in the guest and returns the guest's
        last boot time. With -PreviousBootTime, waits for a boot after that one.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$VMName,
        [Parameter(Mandatory)][pscredential]$Credential,
        [Nullable[datetime]]$PreviousBootTime = $null,
        [int]$TimeoutSeconds = 600,
        # What to look at first if the guest never answers, when the caller knows
        # more (say, the firmware just changed); the general advice follows it.
        [string]$NextCheck = ''
    )
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    $lastSeen = 'nothing yet'
    while ($true) {
        $vm = Get-WfpMonVm -VMName $VMName
        # Heartbeat (Hyper-V integration service): NoContact while the guest OS
        # is not up, e.g. at a BitLocker recovery or a bugcheck screen.
        $heartbeat = if ($vm.PSObject.Properties['Heartbeat']) { [string]$vm.Heartbeat } else { 'unknown' }
        $lastSeen = "VM state $($vm.State), heartbeat $heartbeat"
        if ($vm.State -eq 'Running') {
            try {
                $boot = Invoke-Command -VMName $VMName -Credential $Credential -ErrorAction Stop -ScriptBlock {
                    (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime
                }
                if ($null -eq $PreviousBootTime -or $boot -gt $PreviousBootTime) {
                    return $boot
                }
                $lastSeen = "$lastSeen, PowerShell Direct answers but the guest still runs the boot of $PreviousBootTime (it did not restart)"
            }
            catch {
                $lastSeen = "$lastSeen, PowerShell Direct: $($_.Exception.Message)"
            }
        }
        if ((Get-Date) -gt $deadline) {
            $what = if ($null -eq $PreviousBootTime) { "the guest of VM $VMName to answer over PowerShell Direct" } else { "the guest of VM $VMName to boot again (after $PreviousBootTime) and answer over PowerShell Direct" }
            $general = "open the VM console (vmconnect.exe localhost $VMName): a BitLocker recovery screen, a bugcheck, Windows Update or a logon prompt that never comes show there; " +
            "heartbeat NoContact means the guest OS is not up; if it is up, check the -Credential (a guest administrator) and that the Guest Service Interface / PowerShell Direct works (Get-VMIntegrationService -VMName $VMName)"
            $next = if ($NextCheck) { "$NextCheck; otherwise $general" } else { $general }
            throw (New-WfpMonTimeoutMessage -WaitedFor $what -Seconds $TimeoutSeconds -LastSeen $lastSeen -Next $next)
        }
        Start-Sleep -Seconds 5
    }
}

function New-WfpMonSession {
    <# .SYNOPSIS A PowerShell Direct session to the guest. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$VMName,
        [Parameter(Mandatory)][pscredential]$Credential
    )
    return New-PSSession -VMName $VMName -Credential $Credential -ErrorAction Stop
}

function Get-WfpMonGuestBootTime {
    <# .SYNOPSIS The guest's last boot time (guest clock). #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    return Invoke-Command -Session $Session -ScriptBlock {
        (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime
    }
}

function Get-WfpMonGuestTime {
    <# .SYNOPSIS The guest's clock now (event and file times are compared on the guest clock). #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    return Invoke-Command -Session $Session -ScriptBlock { Get-Date }
}

function Restart-WfpMonGuest {
    <#
    .SYNOPSIS
        Restarts the guest OS, waits for the new boot and returns a new session
        (the old one is closed).
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$VMName,
        [Parameter(Mandatory)][pscredential]$Credential,
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [int]$TimeoutSeconds = 600,
        [string]$NextCheck = ''
    )
    $before = Get-WfpMonGuestBootTime -Session $Session
    Write-WfpMonLog "restarting the guest (booted $before)"
    try {
        Invoke-Command -Session $Session -ScriptBlock { Restart-Computer -Force }
    }
    catch {
        # The session may drop while the guest goes down; that is expected.
        Write-Verbose "restart: $($_.Exception.Message)"
    }
    Remove-PSSession -Session $Session -ErrorAction SilentlyContinue
    $after = Wait-WfpMonGuest -VMName $VMName -Credential $Credential -PreviousBootTime $before -TimeoutSeconds $TimeoutSeconds -NextCheck $NextCheck
    Write-WfpMonLog "guest is back (booted $after)"
    return New-WfpMonSession -VMName $VMName -Credential $Credential
}

function Invoke-WfpMonGuestProcess {
    <#
    .SYNOPSIS
        Runs a program in the guest; returns ExitCode, Output (stdout and stderr as
        they came), Stdout and Stderr. Throws when the exit code is not one of
        -ValidExitCode (unless -NoThrow).
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][string]$FilePath,
        [string[]]$ArgumentList = @(),
        [int[]]$ValidExitCode = @(0),
        [switch]$NoThrow
    )
    $result = Invoke-Command -Session $Session -ArgumentList $FilePath, $ArgumentList -ScriptBlock {
        param([string]$File, [string[]]$Arguments)
        $ErrorActionPreference = 'Continue'
        if ($null -eq $Arguments) { $Arguments = @() }
        $all = @(& $File @Arguments 2>&1)
        $code = $LASTEXITCODE
        $stdout = @($all | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] }) | Out-String
        $stderr = @($all | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] }) | Out-String
        [pscustomobject]@{ ExitCode = $code; Output = ($all | Out-String); Stdout = $stdout; Stderr = $stderr }
    }
    $commandLine = (@($FilePath) + $ArgumentList) -join ' '
    Write-Verbose "guest> $commandLine -> $($result.ExitCode)"
    if (-not $NoThrow -and $ValidExitCode -notcontains $result.ExitCode) {
        throw "guest command '$commandLine' exited with $($result.ExitCode): $($result.Output.Trim())"
    }
    return $result
}

function Get-WfpMonDriverState {
    <# .SYNOPSIS State of the wfpmon kernel service in the guest (Running, Stopped, ...), or $null if absent. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    return Invoke-Command -Session $Session -ArgumentList $script:WfpMon.ServiceName -ScriptBlock {
        param([string]$Name)
        $driver = Get-CimInstance -ClassName Win32_SystemDriver -Filter "Name='$Name'"
        if ($null -eq $driver) { return $null }
        [pscustomobject]@{
            State = [string]$driver.State; Status = [string]$driver.Status; ExitCode = $driver.ExitCode
            PathName = [string]$driver.PathName; StartMode = [string]$driver.StartMode
        }
    }
}

function Wait-WfpMonDriverState {
    <# .SYNOPSIS Waits until the wfpmon service reaches a state (Running or Stopped). #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][ValidateSet('Running', 'Stopped')][string]$State,
        [int]$TimeoutSeconds = 60
    )
    $name = $script:WfpMon.ServiceName
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    while ($true) {
        $current = Get-WfpMonDriverState -Session $Session
        if ($null -ne $current -and $current.State -eq $State) { return }
        if ((Get-Date) -gt $deadline) {
            $seen = if ($null -eq $current) { "no service $name (not installed, or deleted)" } else { "state $($current.State), status $($current.Status), exit code $($current.ExitCode)" }
            if ($State -eq 'Running') {
                $next = "in the guest, sc.exe query $name and the System event log (Service Control Manager events 7000/7026 give the start error); " +
                'error 577 or 1275: the CodeIntegrity Operational log says why the image was refused (test signing, HVCI, blocklist); ' +
                'an exit code from DriverEntry: the ETW trace (DriverEntryFailed names the step)'
            }
            else {
                $next = "a Stop Pending state means the unload routine is still waiting: an open handle to $($script:WfpMon.DeviceName) (a wfpmonctl still running) or a callout the filter engine still holds; " +
                'the ETW trace shows CalloutStillRegistered events with the callout and the time waited; in the guest, sc.exe query ' + $name
            }
            throw (New-WfpMonTimeoutMessage -WaitedFor "service $name to be $State" -Seconds $TimeoutSeconds -LastSeen $seen -Next $next)
        }
        Start-Sleep -Milliseconds 250
    }
}

function Start-WfpMonDriver {
    <# .SYNOPSIS sc.exe start wfpmon, then wait for Running. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    Invoke-WfpMonGuestProcess -Session $Session -FilePath 'sc.exe' -ArgumentList @('start', $script:WfpMon.ServiceName) | Out-Null
    Wait-WfpMonDriverState -Session $Session -State Running
}

function Stop-WfpMonDriver {
    <# .SYNOPSIS sc.exe stop wfpmon (runs DriverUnload), then wait for Stopped. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    Invoke-WfpMonGuestProcess -Session $Session -FilePath 'sc.exe' -ArgumentList @('stop', $script:WfpMon.ServiceName) | Out-Null
    Wait-WfpMonDriverState -Session $Session -State Stopped
}

function Get-WfpMonPublishedInf {
    <# .SYNOPSIS Published names (oemNN.inf) of the wfpmon driver package(s) in the guest's driver store. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    return @(Invoke-Command -Session $Session -ArgumentList $script:WfpMon.InfName -ScriptBlock {
            param([string]$InfName)
            Get-WindowsDriver -Online |
                Where-Object { (Split-Path -Path $_.OriginalFileName -Leaf) -eq $InfName } |
                ForEach-Object { [string]$_.Driver }
        })
}

function Test-WfpMonTestSigning {
    <# .SYNOPSIS True when the running guest OS was booted with test signing on. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    return [bool](Invoke-Command -Session $Session -ScriptBlock {
            $options = (Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control' -Name SystemStartOptions).SystemStartOptions
            $options -match '\bTESTSIGNING\b'
        })
}

function Test-WfpMonVerifierSetting {
    <# .SYNOPSIS True when Driver Verifier is set up (verifier /querysettings) to verify wfpmon.sys. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    $result = Invoke-WfpMonGuestProcess -Session $Session -FilePath 'verifier.exe' -ArgumentList @('/querysettings') -NoThrow
    return $result.Output -match [regex]::Escape($script:WfpMon.ImageName)
}

function Enable-WfpMonTestSigning {
    <# .SYNOPSIS bcdedit /set testsigning on in the guest (takes effect at the next boot). #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    Invoke-WfpMonGuestProcess -Session $Session -FilePath 'bcdedit.exe' -ArgumentList @('/set', 'testsigning', 'on') | Out-Null
}

function Enable-WfpMonVerifier {
    <# .SYNOPSIS verifier /standard /driver wfpmon.sys in the guest (takes effect at the next boot). #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    # verifier.exe returns 2 ("settings changed, reboot required") on success.
    Invoke-WfpMonGuestProcess -Session $Session -FilePath 'verifier.exe' `
        -ArgumentList @('/standard', '/driver', $script:WfpMon.ImageName) -ValidExitCode @(0, 2) | Out-Null
}

function Suspend-WfpMonBitLocker {
    <#
    .SYNOPSIS
        Suspends BitLocker on the guest's system drive for the next RebootCount
        boots (Suspend-BitLocker), so that turning Secure Boot off and test signing
        on does not send the guest into BitLocker recovery. Returns what it found:
        Protected ($true, $false, or $null when unknown), Suspended, Detail.
    .DESCRIPTION
        A Windows 11 guest with a virtual TPM may have turned on device encryption by
        itself. BitLocker seals its key to the boot measurements, which change when
        Secure Boot is turned off (and with the test-signing boot option); with
        protection suspended the drive unlocks anyway, and protection resumes
        (sealed to the new measurements) after RebootCount boots. Throws, with
        what to do, when the drive is protected and cannot be suspended here.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][ValidateRange(1, 15)][int]$RebootCount
    )
    $state = Invoke-Command -Session $Session -ArgumentList $RebootCount -ScriptBlock {
        param([int]$RebootCount)
        $drive = $env:SystemDrive
        $r = [ordered]@{ Drive = $drive; Protected = $null; Suspended = $false; Detail = '' }
        if (Get-Command -Name Get-BitLockerVolume -ErrorAction SilentlyContinue) {
            $volume = Get-BitLockerVolume -MountPoint $drive
            $r.Detail = "ProtectionStatus $($volume.ProtectionStatus), VolumeStatus $($volume.VolumeStatus)"
            $r.Protected = ([string]$volume.ProtectionStatus -eq 'On')
            if ($r.Protected) {
                Suspend-BitLocker -MountPoint $drive -RebootCount $RebootCount | Out-Null
                $r.Suspended = $true
            }
        }
        else {
            # No BitLocker module (some editions): ask the WMI provider instead.
            $volume = Get-CimInstance -Namespace 'root\cimv2\Security\MicrosoftVolumeEncryption' -ClassName Win32_EncryptableVolume `
                -Filter "DriveLetter='$drive'" -ErrorAction SilentlyContinue
            if ($null -eq $volume) {
                $r.Protected = $false
                $r.Detail = 'no BitLocker module and no Win32_EncryptableVolume for the drive: no BitLocker'
            }
            else {
                $r.Protected = ($volume.ProtectionStatus -eq 1)
                $r.Detail = "Win32_EncryptableVolume ProtectionStatus $($volume.ProtectionStatus) (1: on); no BitLocker module to suspend it"
            }
        }
        [pscustomobject]$r
    }
    if ($state.Protected -and -not $state.Suspended) {
        throw ("BitLocker protects the guest's $($state.Drive) ($($state.Detail)); turning Secure Boot off would start BitLocker recovery. " +
            "Suspend it in the guest first (manage-bde.exe -protectors -disable $($state.Drive) -RebootCount $RebootCount) and run this again")
    }
    return $state
}

function Enable-WfpMonDebugPrint {
    <# .SYNOPSIS Makes a debug build's DbgPrint output visible to a kernel debugger (Debug Print Filter DEFAULT = 0xF; read at boot). #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    Invoke-Command -Session $Session -ArgumentList $script:DebugPrintFilterKey, $script:DebugPrintDefaultMask -ScriptBlock {
        param([string]$Key, [int]$Mask)
        if (-not (Test-Path -LiteralPath $Key)) { New-Item -Path $Key -Force | Out-Null }
        New-ItemProperty -LiteralPath $Key -Name 'DEFAULT' -PropertyType DWord -Value $Mask -Force | Out-Null
    }
}

function Enable-WfpMonCrashDump {
    <# .SYNOPSIS Makes sure the guest writes a dump on a bugcheck (CrashDumpEnabled 0 -> 7, automatic memory dump). #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    Invoke-Command -Session $Session -ScriptBlock {
        $key = 'HKLM:\SYSTEM\CurrentControlSet\Control\CrashControl'
        $current = (Get-ItemProperty -LiteralPath $key -Name CrashDumpEnabled).CrashDumpEnabled
        if ($current -eq 0) { Set-ItemProperty -LiteralPath $key -Name CrashDumpEnabled -Value 7 }
    }
}

function Get-WfpMonDebugPrintMask {
    <# .SYNOPSIS The guest's Debug Print Filter DEFAULT mask, or $null. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    return Invoke-Command -Session $Session -ArgumentList $script:DebugPrintFilterKey -ScriptBlock {
        param([string]$Key)
        $item = Get-ItemProperty -LiteralPath $Key -Name 'DEFAULT' -ErrorAction SilentlyContinue
        if ($null -eq $item) { return $null }
        $item.DEFAULT
    }
}

function Install-WfpMonTestCertificate {
    <#
    .SYNOPSIS
        Trusts wdk-build's test certificate in the guest (LocalMachine Root and
        TrustedPublisher), so that pnputil installs the test-signed package without
        a prompt. Returns $false when the package carries no certificate.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][string]$GuestPackageDir
    )
    return Invoke-Command -Session $Session -ArgumentList (Join-Path $GuestPackageDir $script:WfpMon.TestCertificate) -ScriptBlock {
        param([string]$Path)
        if (-not (Test-Path -LiteralPath $Path)) { return $false }
        foreach ($store in @('Cert:\LocalMachine\Root', 'Cert:\LocalMachine\TrustedPublisher')) {
            Import-Certificate -FilePath $Path -CertStoreLocation $store | Out-Null
        }
        return $true
    }
}

function Get-WfpMonBugCheckEvidence {
    <#
    .SYNOPSIS
        Signs of a bugcheck or an unexpected reboot in the guest since a guest time:
        System log events 1001 (BugCheck, WER-SystemErrorReporting) and 41
        (Kernel-Power), new files in %SystemRoot%\Minidump, a new MEMORY.DMP.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][datetime]$Since
    )
    return @(Invoke-Command -Session $Session -ArgumentList $Since -ScriptBlock {
            param([datetime]$Since)
            $found = New-Object System.Collections.Generic.List[string]
            $events = @(Get-WinEvent -FilterHashtable @{ LogName = 'System'; Id = @(1001, 41); StartTime = $Since } -ErrorAction SilentlyContinue)
            foreach ($e in $events) {
                if ($e.Id -eq 1001 -and $e.ProviderName -match 'WER-SystemErrorReporting|BugCheck') {
                    $found.Add("System event 1001 (BugCheck) at $($e.TimeCreated): $(([string]$e.Message).Trim())")
                }
                elseif ($e.Id -eq 41 -and $e.ProviderName -eq 'Microsoft-Windows-Kernel-Power') {
                    $found.Add("System event 41 (Kernel-Power: rebooted without a clean shutdown) at $($e.TimeCreated)")
                }
            }
            $minidumps = Join-Path $env:SystemRoot 'Minidump'
            if (Test-Path -LiteralPath $minidumps) {
                foreach ($dump in @(Get-ChildItem -LiteralPath $minidumps -Filter '*.dmp' | Where-Object { $_.LastWriteTime -ge $Since })) {
                    $found.Add("minidump $($dump.FullName) ($($dump.LastWriteTime))")
                }
            }
            $full = Join-Path $env:SystemRoot 'MEMORY.DMP'
            if ((Test-Path -LiteralPath $full) -and (Get-Item -LiteralPath $full).LastWriteTime -ge $Since) {
                $found.Add("kernel dump $full ($((Get-Item -LiteralPath $full).LastWriteTime))")
            }
            $found.ToArray()
        })
}

function Save-WfpMonMinidump {
    <# .SYNOPSIS Copies the guest's minidumps written since a guest time to a host folder; returns how many. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][datetime]$Since,
        [Parameter(Mandatory)][string]$Destination
    )
    $paths = @(Invoke-Command -Session $Session -ArgumentList $Since -ScriptBlock {
            param([datetime]$Since)
            $dir = Join-Path $env:SystemRoot 'Minidump'
            if (Test-Path -LiteralPath $dir) {
                Get-ChildItem -LiteralPath $dir -Filter '*.dmp' | Where-Object { $_.LastWriteTime -ge $Since } | ForEach-Object { $_.FullName }
            }
        })
    if ($paths.Count -gt 0 -and -not (Test-Path -LiteralPath $Destination)) {
        New-Item -ItemType Directory -Path $Destination -Force | Out-Null
    }
    foreach ($path in $paths) {
        Copy-Item -FromSession $Session -Path $path -Destination $Destination -Force
        Write-WfpMonLog "copied $path to $Destination"
    }
    return $paths.Count
}

function Get-WfpMonWfpState {
    <# .SYNOPSIS The guest's filter-engine state (netsh wfp show state) as XML text. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][string]$GuestFile
    )
    Invoke-WfpMonGuestProcess -Session $Session -FilePath 'netsh.exe' -ArgumentList @('wfp', 'show', 'state', "file=$GuestFile") | Out-Null
    return Invoke-Command -Session $Session -ArgumentList $GuestFile -ScriptBlock {
        param([string]$Path)
        Get-Content -LiteralPath $Path -Raw
    }
}

function Find-WfpMonWfpObject {
    <#
    .SYNOPSIS
        Which of wfpmon's provider, sublayer and callout keys appear in a filter-engine
        state dump. Returns Present and Missing name lists.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][AllowEmptyString()][string]$StateText)
    $keys = [ordered]@{ provider = $script:WfpMon.ProviderKey; sublayer = $script:WfpMon.SublayerKey }
    foreach ($name in $script:WfpMon.CalloutKeys.Keys) { $keys[$name] = $script:WfpMon.CalloutKeys[$name] }
    $present = New-Object System.Collections.Generic.List[string]
    $missing = New-Object System.Collections.Generic.List[string]
    foreach ($name in $keys.Keys) {
        if ($StateText -match [regex]::Escape($keys[$name])) { $present.Add($name) } else { $missing.Add($name) }
    }
    return [pscustomobject]@{ Present = $present.ToArray(); Missing = $missing.ToArray() }
}

# One round of loopback traffic in the guest, for IPv4 and IPv6 (so that all six
# callouts see traffic): a TCP connection carrying TcpBytes one way and a short
# reply the other way, and UdpDatagrams datagrams of 512 bytes. With CtlPath,
# `wfpmonctl flows --json` runs while the TCP connection is open and the result
# says whether the listener's port shows up in the flow list. Runs in the guest
# (Invoke-Command or a background job), so it only uses .NET and built-ins.
$script:TrafficRoundCode = {
    param([int]$TcpBytes, [int]$UdpDatagrams, [string]$CtlPath)
    $ErrorActionPreference = 'Stop'
    foreach ($family in @('IPv4', 'IPv6')) {
        if ($family -eq 'IPv4') { $address = [System.Net.IPAddress]::Loopback } else { $address = [System.Net.IPAddress]::IPv6Loopback }
        $r = [ordered]@{ Family = $family; TcpOk = $false; UdpOk = $false; Port = 0; FlowsExitCode = $null; FlowListed = $null; Error = '' }
        $listener = $null; $client = $null; $server = $null; $udpIn = $null; $udpOut = $null
        try {
            $listener = [System.Net.Sockets.TcpListener]::new($address, 0)
            $listener.Start()
            $port = ([System.Net.IPEndPoint]$listener.LocalEndpoint).Port
            $r.Port = $port
            $client = [System.Net.Sockets.TcpClient]::new($address.AddressFamily)
            $connect = $client.ConnectAsync($address, $port)
            $server = $listener.AcceptTcpClient()
            if (-not $connect.Wait(5000)) { throw "TCP connect to port $port timed out" }
            $out = $client.GetStream()
            $in = $server.GetStream()
            $out.ReadTimeout = 5000
            $in.ReadTimeout = 5000
            $chunk = New-Object byte[] 16384
            $sent = 0
            while ($sent -lt $TcpBytes) {
                $n = [Math]::Min($chunk.Length, $TcpBytes - $sent)
                $out.Write($chunk, 0, $n)
                $got = 0
                while ($got -lt $n) {
                    $k = $in.Read($chunk, 0, $n - $got)
                    if ($k -le 0) { throw 'TCP connection closed early' }
                    $got += $k
                }
                $sent += $n
            }
            $in.Write([byte[]](79, 75), 0, 2)
            $reply = New-Object byte[] 2
            $got = 0
            while ($got -lt 2) {
                $k = $out.Read($reply, $got, 2 - $got)
                if ($k -le 0) { throw 'no TCP reply' }
                $got += $k
            }
            $r.TcpOk = $true
            if ($CtlPath) {
                $flows = & $CtlPath flows --json 2>&1 | Out-String
                $r.FlowsExitCode = $LASTEXITCODE
                $r.FlowListed = ($LASTEXITCODE -eq 0) -and ($flows -match "\b$port\b")
            }

            $udpIn = [System.Net.Sockets.UdpClient]::new($address.AddressFamily)
            $udpIn.Client.Bind([System.Net.IPEndPoint]::new($address, 0))
            $udpIn.Client.ReceiveTimeout = 5000
            $target = [System.Net.IPEndPoint]$udpIn.Client.LocalEndPoint
            $udpOut = [System.Net.Sockets.UdpClient]::new($address.AddressFamily)
            $payload = New-Object byte[] 512
            $received = 0
            for ($i = 0; $i -lt $UdpDatagrams; $i++) {
                [void]$udpOut.Send($payload, $payload.Length, $target)
                $from = [System.Net.IPEndPoint]::new($address, 0)
                [void]$udpIn.Receive([ref]$from)
                $received++
            }
            $r.UdpOk = ($received -eq $UdpDatagrams)
        }
        catch {
            $r.Error = $_.Exception.Message
        }
        finally {
            foreach ($d in @($client, $server, $udpIn, $udpOut)) { if ($null -ne $d) { $d.Dispose() } }
            if ($null -ne $listener) { $listener.Stop() }
        }
        [pscustomobject]$r
    }
}

# Rounds of the above until a stop file appears (or a time limit passes);
# counts failed rounds. Runs as a background job in the guest.
$script:TrafficLoopCode = {
    param([string]$RoundCode, [string]$StopFile, [int]$MaxSeconds)
    $round = [scriptblock]::Create($RoundCode)
    $deadline = (Get-Date).AddSeconds($MaxSeconds)
    $rounds = 0
    $failures = 0
    $errors = New-Object System.Collections.Generic.List[string]
    while (-not (Test-Path -LiteralPath $StopFile) -and (Get-Date) -lt $deadline) {
        $rounds++
        try {
            foreach ($x in @(& $round 262144 32 '')) {
                if (-not ($x.TcpOk -and $x.UdpOk)) {
                    $failures++
                    $errors.Add("round ${rounds} $($x.Family): $($x.Error)")
                }
            }
        }
        catch {
            $failures++
            $errors.Add("round ${rounds}: $($_.Exception.Message)")
        }
    }
    [pscustomobject]@{ Rounds = $rounds; Failures = $failures; Errors = $errors.ToArray() }
}

function Invoke-WfpMonLoopbackTraffic {
    <# .SYNOPSIS One round of TCP and UDP loopback traffic (IPv4 and IPv6) in the guest; one result per family. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [int]$TcpBytes = 1048576,
        [int]$UdpDatagrams = 64,
        [string]$GuestCtlPath = ''
    )
    return @(Invoke-Command -Session $Session -ScriptBlock $script:TrafficRoundCode -ArgumentList $TcpBytes, $UdpDatagrams, $GuestCtlPath)
}

function Start-WfpMonTrafficJob {
    <# .SYNOPSIS Starts continuous loopback traffic in the guest (background job 'wfpmon-traffic'). #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][string]$StopFile,
        [int]$MaxSeconds = 1800
    )
    Invoke-Command -Session $Session -ArgumentList $script:TrafficLoopCode.ToString(), $script:TrafficRoundCode.ToString(), $StopFile, $MaxSeconds -ScriptBlock {
        param([string]$LoopCode, [string]$RoundCode, [string]$StopFile, [int]$MaxSeconds)
        Remove-Item -LiteralPath $StopFile -Force -ErrorAction SilentlyContinue
        Get-Job -Name 'wfpmon-traffic' -ErrorAction SilentlyContinue | Remove-Job -Force
        Start-Job -Name 'wfpmon-traffic' -ScriptBlock ([scriptblock]::Create($LoopCode)) -ArgumentList $RoundCode, $StopFile, $MaxSeconds | Out-Null
    }
}

function Stop-WfpMonTrafficJob {
    <# .SYNOPSIS Stops the guest's traffic job and returns its Rounds, Failures and Errors. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][string]$StopFile,
        [int]$TimeoutSeconds = 120
    )
    # The guest answers whether the job ended in time; the verdict (and the
    # message) is made here, where the kit's functions are.
    $answer = Invoke-Command -Session $Session -ArgumentList $StopFile, $TimeoutSeconds -ScriptBlock {
        param([string]$StopFile, [int]$TimeoutSeconds)
        Set-Content -LiteralPath $StopFile -Value 'stop'
        # A flat answer: remoting serializes nested objects only to a shallow depth.
        $answer = [ordered]@{ Ended = $false; Seen = ''; Rounds = 0; Failures = 0; Errors = @() }
        $job = Get-Job -Name 'wfpmon-traffic' -ErrorAction SilentlyContinue
        if ($null -eq $job) {
            $answer.Seen = 'no job named wfpmon-traffic in the guest session'
        }
        elseif (-not (Wait-Job -Job $job -Timeout $TimeoutSeconds)) {
            $answer.Seen = "job state $($job.State), stop file present: $(Test-Path -LiteralPath $StopFile)"
            Stop-Job -Job $job
        }
        else {
            $result = Receive-Job -Job $job
            Remove-Job -Job $job -Force
            $answer.Ended = $true
            $answer.Seen = "job state $($job.State)"
            $answer.Rounds = $result.Rounds
            $answer.Failures = $result.Failures
            $answer.Errors = @($result.Errors)
        }
        [pscustomobject]$answer
    }
    if (-not $answer.Ended) {
        throw (New-WfpMonTimeoutMessage -WaitedFor "the guest's loopback traffic job to end after its stop file $StopFile appeared" `
                -Seconds $TimeoutSeconds -LastSeen $answer.Seen `
                -Next 'a traffic round blocked in a socket call (each has a 5 s time-out) or a hung guest: look at the guest (Get-Job wfpmon-traffic | Receive-Job -Keep) and at the ETW trace for a driver stop that never finished')
    }
    return [pscustomobject]@{ Rounds = $answer.Rounds; Failures = $answer.Failures; Errors = @($answer.Errors) }
}

function ConvertTo-WfpMonNumberTable {
    <# .SYNOPSIS Flattens parsed JSON into 'path' -> number for every numeric leaf. #>
    [CmdletBinding()]
    param([AllowNull()]$InputObject, [string]$Prefix = '')
    $table = [ordered]@{}
    if ($null -eq $InputObject) { return $table }
    if ($InputObject -is [System.ValueType] -and -not ($InputObject -is [bool]) -and -not ($InputObject -is [datetime])) {
        $table[$Prefix] = [double]$InputObject
        return $table
    }
    if ($InputObject -is [string]) { return $table }
    if ($InputObject -is [System.Collections.IEnumerable]) {
        $i = 0
        foreach ($item in $InputObject) {
            $sub = ConvertTo-WfpMonNumberTable -InputObject $item -Prefix "$Prefix[$i]"
            foreach ($k in $sub.Keys) { $table[$k] = $sub[$k] }
            $i++
        }
        return $table
    }
    foreach ($property in $InputObject.PSObject.Properties) {
        $sub = ConvertTo-WfpMonNumberTable -InputObject $property.Value -Prefix "$Prefix.$($property.Name)"
        foreach ($k in $sub.Keys) { $table[$k] = $sub[$k] }
    }
    return $table
}

function Get-WfpMonCtlJson {
    <# .SYNOPSIS Runs `wfpmonctl <command> --json` in the guest and returns the parsed JSON. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][string]$GuestCtlPath,
        [Parameter(Mandatory)][ValidateSet('stats', 'flows')][string]$Command
    )
    $result = Invoke-WfpMonGuestProcess -Session $Session -FilePath $GuestCtlPath -ArgumentList @($Command, '--json')
    try {
        return $result.Stdout | ConvertFrom-Json
    }
    catch {
        throw "wfpmonctl $Command --json printed no valid JSON on stdout: $($result.Output.Trim())"
    }
}

function Measure-WfpMonByteCount {
    <# .SYNOPSIS Sum of the numeric leaves of wfpmonctl stats JSON whose name contains 'bytes'. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][AllowNull()]$Stats)
    $table = ConvertTo-WfpMonNumberTable -InputObject $Stats
    $byteKeys = @($table.Keys | Where-Object { $_ -match 'bytes' })
    if ($byteKeys.Count -eq 0) { return $null }
    $sum = 0.0
    foreach ($k in $byteKeys) { $sum += $table[$k] }
    return $sum
}

function Start-WfpMonTrace {
    <#
    .SYNOPSIS
        Starts an ETW session in the guest that writes wfpmon's TraceLogging events
        (all keywords, level 5) to GuestEtlFile. Call it before the driver loads:
        ETW keeps the enable settings for a provider that has not registered yet
        and applies them when DriverEntry registers it.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][string]$GuestEtlFile
    )
    # logman does not create the folder of its output file: make it first.
    Invoke-Command -Session $Session -ArgumentList (Split-Path -Path $GuestEtlFile -Parent) -ScriptBlock {
        param([string]$Dir)
        if ($Dir -and -not (Test-Path -LiteralPath $Dir)) { New-Item -ItemType Directory -Path $Dir -Force | Out-Null }
    }
    # A session of this name left behind by an interrupted run would make
    # `logman create` fail; stopping it first is harmless when there is none.
    Invoke-WfpMonGuestProcess -Session $Session -FilePath 'logman.exe' -ArgumentList @('stop', $script:EtwSessionName, '-ets') -NoThrow | Out-Null
    # logman create trace <name> -ets starts the session at once (nothing is saved
    # or scheduled); -p <provider [flags [level]]>; -bs buffer size in KB; -nb min
    # and max buffers; -ow overwrites an old file. Sequential file mode (default).
    $provider = '{' + $script:WfpMon.EtwProviderGuid + '}'
    Invoke-WfpMonGuestProcess -Session $Session -FilePath 'logman.exe' -ArgumentList @(
        'create', 'trace', $script:EtwSessionName, '-ow', '-o', $GuestEtlFile,
        '-p', $provider, $script:EtwKeywords, $script:EtwLevel,
        '-bs', '256', '-nb', '16', '256', '-ets') | Out-Null
}

function Stop-WfpMonTrace {
    <#
    .SYNOPSIS
        Stops the guest's wfpmon ETW session (logman stop -ets), which flushes and
        closes the .etl file. Returns $true when logman stopped a session.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session)
    $result = Invoke-WfpMonGuestProcess -Session $Session -FilePath 'logman.exe' -ArgumentList @('stop', $script:EtwSessionName, '-ets') -NoThrow
    return ($result.ExitCode -eq 0)
}

function Wait-WfpMonTraceFile {
    <#
    .SYNOPSIS
        Waits until the guest's .etl file is complete: present, not empty, and no
        longer held open by an ETW session (logman stop flushes and closes it).
        Returns its size in bytes.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][string]$GuestEtlFile,
        [int]$TimeoutSeconds = 60
    )
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    while ($true) {
        $probe = Invoke-Command -Session $Session -ArgumentList $GuestEtlFile -ScriptBlock {
            param([string]$Path)
            if (-not (Test-Path -LiteralPath $Path)) { return [pscustomobject]@{ Ready = $false; Size = 0; Seen = "no file $Path" } }
            $size = (Get-Item -LiteralPath $Path).Length
            try {
                # Exclusive open: fails while the ETW session still writes the file.
                $stream = [System.IO.File]::Open($Path, 'Open', 'Read', 'None')
                $stream.Dispose()
                [pscustomobject]@{ Ready = ($size -gt 0); Size = $size; Seen = "$Path, $size bytes, closed" }
            }
            catch {
                [pscustomobject]@{ Ready = $false; Size = $size; Seen = "$Path, $size bytes, still open: $($_.Exception.Message)" }
            }
        }
        if ($probe.Ready) { return $probe.Size }
        if ((Get-Date) -gt $deadline) {
            throw (New-WfpMonTimeoutMessage -WaitedFor "the ETW trace file $GuestEtlFile to be written and closed" -Seconds $TimeoutSeconds -LastSeen $probe.Seen `
                    -Next "in the guest, logman query -ets lists the sessions still running (stop ours with logman stop $($script:EtwSessionName) -ets); an empty file means no event reached the session; check the free space of the guest's system drive")
        }
        Start-Sleep -Seconds 1
    }
}

function Convert-WfpMonTrace {
    <#
    .SYNOPSIS
        Converts a guest .etl file to XML in the guest (tracerpt <etl> -o <xml> -of XML -y)
        and returns the XML text. TraceLogging events carry their own metadata, so
        no manifest is needed to decode them.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Management.Automation.Runspaces.PSSession]$Session,
        [Parameter(Mandatory)][string]$GuestEtlFile,
        [Parameter(Mandatory)][string]$GuestXmlFile
    )
    Invoke-WfpMonGuestProcess -Session $Session -FilePath 'tracerpt.exe' -ArgumentList @($GuestEtlFile, '-o', $GuestXmlFile, '-of', 'XML', '-y') | Out-Null
    return Invoke-Command -Session $Session -ArgumentList $GuestXmlFile -ScriptBlock {
        param([string]$Path)
        Get-Content -LiteralPath $Path -Raw
    }
}

function Measure-WfpMonTraceEvent {
    <#
    .SYNOPSIS
        Counts wfpmon's events by name in tracerpt's XML dump. Events of other
        providers (the trace header) are skipped; an event of the provider whose
        name cannot be read is counted as '(unnamed)'.
    .DESCRIPTION
        tracerpt renders a TraceLogging event's name as its task name
        (RenderingInfo/Task); as a fallback the first element or attribute whose
        whole text is one of the known event names is taken.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][AllowEmptyString()][string]$XmlText)
    $counts = [ordered]@{}
    foreach ($name in $script:EtwEventNames) { $counts[$name] = 0 }
    $counts['(unnamed)'] = 0
    if (-not $XmlText.Trim()) { return $counts }
    $doc = New-Object System.Xml.XmlDocument
    $doc.LoadXml($XmlText)
    foreach ($record in @($doc.SelectNodes("//*[local-name()='Event']"))) {
        $provider = $record.SelectSingleNode("*[local-name()='System']/*[local-name()='Provider']")
        if ($null -eq $provider) { continue }
        # -ne compares case-insensitively; tracerpt writes the GUID in braces.
        $providerGuid = ([string]$provider.GetAttribute('Guid')).Trim('{', '}')
        $providerName = [string]$provider.GetAttribute('Name')
        if ($providerGuid -ne $script:WfpMon.EtwProviderGuid -and $providerName -ne $script:WfpMon.EtwProviderName) { continue }
        $name = $null
        $task = $record.SelectSingleNode("*[local-name()='RenderingInfo']/*[local-name()='Task']")
        if ($null -ne $task -and $script:EtwEventNames -contains $task.InnerText.Trim()) {
            $name = $task.InnerText.Trim()
        }
        else {
            foreach ($node in @($record.SelectNodes('.//*|.//@*'))) {
                if ($node.NodeType -eq [System.Xml.XmlNodeType]::Element -and $node.HasChildNodes -and $node.FirstChild.NodeType -eq [System.Xml.XmlNodeType]::Element) { continue }
                $text = ([string]$node.InnerText).Trim()
                if ($script:EtwEventNames -contains $text) { $name = $text; break }
            }
        }
        if ($null -eq $name) { $counts['(unnamed)']++ } else { $counts[$name]++ }
    }
    return $counts
}

function Test-WfpMonTraceCount {
    <#
    .SYNOPSIS
        Checks event counts of a run against the driver starts and stops the run made.
        Returns the problems found (none: the trace agrees).
    .DESCRIPTION
        Every successful sc.exe start writes one DriverEntryComplete, every stop
        (DriverUnload) one TeardownComplete; DriverEntryFailed and FlowRecordsLeft
        must never appear.
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][System.Collections.IDictionary]$Count,
        [Parameter(Mandatory)][int]$DriverStarts,
        [Parameter(Mandatory)][int]$DriverStops
    )
    $problems = New-Object System.Collections.Generic.List[string]
    if ($Count['TeardownComplete'] -ne $DriverStops) {
        $problems.Add("$($Count['TeardownComplete']) TeardownComplete events for $DriverStops driver stops")
    }
    if ($Count['DriverEntryComplete'] -ne $DriverStarts) {
        $problems.Add("$($Count['DriverEntryComplete']) DriverEntryComplete events for $DriverStarts driver starts")
    }
    foreach ($bad in @('DriverEntryFailed', 'FlowRecordsLeft')) {
        if ($Count[$bad] -gt 0) { $problems.Add("$($Count[$bad]) $bad events") }
    }
    if ($Count['(unnamed)'] -gt 0) {
        $problems.Add("$($Count['(unnamed)']) $($script:WfpMon.EtwProviderName) events without a known name")
    }
    return $problems.ToArray()
}

function New-WfpMonCheckpoint {
    <# .SYNOPSIS Checkpoint-VM under a name; an older checkpoint of that name is replaced with -Replace. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$VMName,
        [Parameter(Mandatory)][string]$Name,
        [switch]$Replace
    )
    $existing = @(Get-VMSnapshot -VMName $VMName -Name $Name -ErrorAction SilentlyContinue)
    if ($existing.Count -gt 0) {
        if (-not $Replace) {
            Write-WfpMonLog "checkpoint '$Name' of $VMName exists already; kept"
            return
        }
        Write-WfpMonLog "replacing checkpoint '$Name' of $VMName"
        $existing | Remove-VMSnapshot -Confirm:$false
    }
    Write-WfpMonLog "creating checkpoint '$Name' of $VMName"
    Checkpoint-VM -Name $VMName -SnapshotName $Name
}

function Restore-WfpMonCheckpoint {
    <# .SYNOPSIS Reverts the VM to a named checkpoint and starts it again if the checkpoint left it off or saved. #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$VMName,
        [Parameter(Mandatory)][string]$Name
    )
    $existing = @(Get-VMSnapshot -VMName $VMName -Name $Name -ErrorAction SilentlyContinue)
    if ($existing.Count -eq 0) {
        throw "VM $VMName has no checkpoint named '$Name' (Prepare-TestVM.ps1 creates it)"
    }
    Write-WfpMonLog "reverting $VMName to checkpoint '$Name'"
    Restore-VMSnapshot -VMName $VMName -Name $Name -Confirm:$false
    Start-WfpMonVm -VMName $VMName
}

Export-ModuleMember -Function @(
    'Get-WfpMonConstant',
    'Set-WfpMonLogFile',
    'Write-WfpMonLog',
    'New-WfpMonTimeoutMessage',
    'Assert-WfpMonHost',
    'Assert-WfpMonPackage',
    'Get-WfpMonVm',
    'Start-WfpMonVm',
    'Wait-WfpMonGuest',
    'New-WfpMonSession',
    'Get-WfpMonGuestBootTime',
    'Get-WfpMonGuestTime',
    'Restart-WfpMonGuest',
    'Invoke-WfpMonGuestProcess',
    'Get-WfpMonDriverState',
    'Wait-WfpMonDriverState',
    'Start-WfpMonDriver',
    'Stop-WfpMonDriver',
    'Get-WfpMonPublishedInf',
    'Test-WfpMonTestSigning',
    'Test-WfpMonVerifierSetting',
    'Enable-WfpMonTestSigning',
    'Enable-WfpMonVerifier',
    'Suspend-WfpMonBitLocker',
    'Enable-WfpMonDebugPrint',
    'Enable-WfpMonCrashDump',
    'Get-WfpMonDebugPrintMask',
    'Install-WfpMonTestCertificate',
    'Get-WfpMonBugCheckEvidence',
    'Save-WfpMonMinidump',
    'Get-WfpMonWfpState',
    'Find-WfpMonWfpObject',
    'Invoke-WfpMonLoopbackTraffic',
    'Start-WfpMonTrafficJob',
    'Stop-WfpMonTrafficJob',
    'ConvertTo-WfpMonNumberTable',
    'Get-WfpMonCtlJson',
    'Measure-WfpMonByteCount',
    'Start-WfpMonTrace',
    'Stop-WfpMonTrace',
    'Wait-WfpMonTraceFile',
    'Convert-WfpMonTrace',
    'Measure-WfpMonTraceEvent',
    'Test-WfpMonTraceCount',
    'New-WfpMonCheckpoint',
    'Restore-WfpMonCheckpoint'
)

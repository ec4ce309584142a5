#Requires -Version 5.1
#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Installs the test-signed wfpmon package in a prepared Hyper-V guest, exercises it
    under live TCP and UDP traffic, checks for bugchecks, uninstalls it and reverts
    the VM.

.DESCRIPTION
    RUNS ONLY ON A WINDOWS HOST WITH HYPER-V (elevated PowerShell, Hyper-V PowerShell
    module). Run Prepare-TestVM.ps1 once first (test signing, Driver Verifier on
    wfpmon.sys, checkpoint 'wfpmon-prepared').

    In the guest, over PowerShell Direct:
       1. copy the package folder (wfpmon.sys, wfpmon.inf, wfpmon.cat, the test
          certificate), wfpmonctl.exe and the WPR profile (scripts\windows\wfpmon.wprp,
          for a manual WPR capture in a guest kept with -NoRevert); trust the test
          certificate; start an ETW
          session (logman) for the driver's TraceLogging provider, all keywords,
          level 5, before the driver is loaded;
       2. pnputil /add-driver wfpmon.inf /install; check that the service exists and
          that its image runs from the driver store; sc.exe start wfpmon;
       3. wfpmonctl install; wfpmonctl status; netsh wfp show state lists the provider,
          sublayer and all six callouts;
       4. TCP and UDP loopback traffic over IPv4 and IPv6; wfpmonctl flows --json lists
          the open test connection; wfpmonctl stats --json byte counters grow;
       5. -Iterations times: sc.exe stop / sc.exe start under continuous traffic, which
          must never fail (inspection filters are ignored while their callout is unregistered);
       6. with the driver stopped and the filters still there, traffic must still flow;
       7. no bugcheck: System events 1001 (BugCheck) / 41 (Kernel-Power), no new
          minidump or MEMORY.DMP;
       8. wfpmonctl uninstall (the objects are gone from netsh wfp show state);
          sc.exe stop wfpmon;
       9. the ETW trace: logman stop, wait until the .etl is closed, copy it back,
          tracerpt -of XML; one
          TeardownComplete per driver stop, one DriverEntryComplete per start, no
          DriverEntryFailed and no FlowRecordsLeft event;
      10. pnputil /delete-driver oemNN.inf /uninstall, then sc.exe delete wfpmon if the
          service is still there (the INF has no uninstall section: a primitive driver's
          removal is the reverse of its install);
      11. revert to -Checkpoint (unless -NoRevert).

    A guest that crashes mid-test reboots (or is waited for) and the bugcheck evidence
    is collected before the verdict. Whatever the outcome, the ETW session is stopped
    and its .etl (and XML) copied back while the guest session is open. Results (log,
    wfpmon.etl, wfpmon-trace.xml, filter-engine state) go to -ResultPath on the host.

    Every wait that gives up (guest reachable, service state, traffic job, trace file)
    says what it waited for, what it saw last and what to check next.

    Last line: WFPMON-VM-TEST: PASS, or WFPMON-VM-TEST: FAIL: <reason>; exit code 0 or 1.

.PARAMETER VMName
    Name of the Hyper-V VM.
.PARAMETER PackagePath
    Host folder made by `cargo make` (target\<profile>\wfpmon_package).
.PARAMETER CtlPath
    Host path of wfpmonctl.exe (cargo make wfpmonctl, or cargo build -p wfpmonctl).
.PARAMETER Credential
    Guest administrator credential (Get-Credential).
.PARAMETER Iterations
    How many times the service is stopped and started under traffic.
.PARAMETER Checkpoint
    Checkpoint to revert to at the end (and at the start with -RevertFirst).
.PARAMETER NoRevert
    Leave the guest as the test left it.
.PARAMETER RevertFirst
    Revert to -Checkpoint before the test, too.
.PARAMETER ResultPath
    Host folder for the test log and collected files.
.PARAMETER GuestDirectory
    Work folder in the guest.
.PARAMETER BootTimeoutSeconds
    How long to wait for the guest after a start, revert or crash.

.EXAMPLE
    .\Invoke-WfpMonVmTest.ps1 -VMName wfpmon-test -Credential (Get-Credential) `
        -PackagePath ..\..\target\debug\wfpmon_package -CtlPath ..\..\target\debug\wfpmonctl.exe -Iterations 10
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string]$VMName,
    [Parameter(Mandatory)][string]$PackagePath,
    [Parameter(Mandatory)][string]$CtlPath,
    [Parameter(Mandatory)][pscredential]$Credential,
    [ValidateRange(1, 1000)][int]$Iterations = 5,
    [string]$Checkpoint = 'wfpmon-prepared',
    [switch]$NoRevert,
    [switch]$RevertFirst,
    [string]$ResultPath = (Join-Path (Get-Location) 'wfpmon-vm-results'),
    [string]$GuestDirectory = 'C:\wfpmon-test',
    [ValidateRange(60, 3600)][int]$BootTimeoutSeconds = 600
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

Import-Module (Join-Path $PSScriptRoot 'WfpMonVm.psm1') -Force

$stamp = Get-Date -Format 'yyyyMMdd-HHmmss'
$runDir = Join-Path $ResultPath $stamp
Set-WfpMonLogFile -Path (Join-Path $runDir 'wfpmon-vm-test.log')

$names = Get-WfpMonConstant
$guestPackage = Join-Path $GuestDirectory $names.PackageDirName
$guestInf = Join-Path $guestPackage $names.InfName
$guestCtl = Join-Path $GuestDirectory 'wfpmonctl.exe'
$guestStopFile = Join-Path $GuestDirectory 'traffic.stop'
$guestEtl = Join-Path $GuestDirectory 'wfpmon.etl'
$guestTraceXml = Join-Path $GuestDirectory 'wfpmon-trace.xml'
$hostWprProfile = Join-Path (Split-Path -Path $PSScriptRoot -Parent) (Join-Path 'windows' $names.WprProfileName)

$session = $null
$failure = $null
$warnings = New-Object System.Collections.Generic.List[string]
$guestStart = $null
$bootAtStart = $null
$published = @()
$traceStarted = $false
$driverStarts = 0
$driverStops = 0
$filtersInstalled = $false
$packageAdded = $false

function Assert-Step {
    <# .SYNOPSIS Throws the reason when a check fails. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][bool]$Condition, [Parameter(Mandatory)][string]$Reason)
    if (-not $Condition) { throw $Reason }
}

function Add-Warning {
    <# .SYNOPSIS Records a finding that does not fail the run. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][string]$Message)
    $warnings.Add($Message)
    Write-WfpMonLog $Message -Level Warn
}

function Test-TrafficResult {
    <# .SYNOPSIS Throws unless every family's TCP and UDP round succeeded. #>
    [CmdletBinding()]
    param([Parameter(Mandatory)][object[]]$Result, [Parameter(Mandatory)][string]$When)
    foreach ($r in $Result) {
        Assert-Step ($r.TcpOk -and $r.UdpOk) "$When`: $($r.Family) loopback traffic failed (TCP ok: $($r.TcpOk), UDP ok: $($r.UdpOk)): $($r.Error)"
    }
}

try {
    Assert-WfpMonHost
    Assert-WfpMonPackage -PackagePath $PackagePath
    Assert-Step (Test-Path -LiteralPath $CtlPath -PathType Leaf) "wfpmonctl not found at $CtlPath"
    Get-WfpMonVm -VMName $VMName | Out-Null

    if ($RevertFirst) {
        Restore-WfpMonCheckpoint -VMName $VMName -Name $Checkpoint
    }
    Start-WfpMonVm -VMName $VMName
    $bootAtStart = Wait-WfpMonGuest -VMName $VMName -Credential $Credential -TimeoutSeconds $BootTimeoutSeconds
    $session = New-WfpMonSession -VMName $VMName -Credential $Credential
    $guestStart = Get-WfpMonGuestTime -Session $session
    Write-WfpMonLog "guest up since $bootAtStart; test starts at guest time $guestStart"

    # --- preconditions -------------------------------------------------------
    Assert-Step (Test-WfpMonTestSigning -Session $session) 'test signing is not active in the guest (run Prepare-TestVM.ps1)'
    if (-not (Test-WfpMonVerifierSetting -Session $session)) {
        Add-Warning "Driver Verifier is not set up for $($names.ImageName) (run Prepare-TestVM.ps1)"
    }
    Assert-Step ($null -eq (Get-WfpMonDriverState -Session $session)) "service $($names.ServiceName) already exists in the guest (revert the VM first, or use -RevertFirst)"
    $earlier = @(Get-WfpMonBugCheckEvidence -Session $session -Since $bootAtStart.AddDays(-1))
    if ($earlier.Count -gt 0) {
        Add-Warning "bugcheck traces older than this run: $($earlier -join '; ')"
    }

    # --- copy and install ----------------------------------------------------
    Write-WfpMonLog "copying $PackagePath and $CtlPath to the guest's $GuestDirectory"
    Invoke-Command -Session $session -ArgumentList $GuestDirectory, $guestPackage -ScriptBlock {
        param([string]$Dir, [string]$Package)
        if (Test-Path -LiteralPath $Dir) { Remove-Item -LiteralPath $Dir -Recurse -Force }
        New-Item -ItemType Directory -Path $Package -Force | Out-Null
    }
    Copy-Item -Path (Join-Path $PackagePath '*') -Destination $guestPackage -ToSession $session -Recurse -Force
    Copy-Item -Path $CtlPath -Destination $guestCtl -ToSession $session -Force
    if (Test-Path -LiteralPath $hostWprProfile -PathType Leaf) {
        Copy-Item -Path $hostWprProfile -Destination (Join-Path $GuestDirectory $names.WprProfileName) -ToSession $session -Force
    }
    else {
        Add-Warning "no WPR profile at $hostWprProfile (scripts\windows in the repository); not copied to the guest"
    }
    if (Install-WfpMonTestCertificate -Session $session -GuestPackageDir $guestPackage) {
        Write-WfpMonLog "trusted $($names.TestCertificate) (Root, TrustedPublisher)"
    }
    else {
        Add-Warning "the package has no $($names.TestCertificate); pnputil may refuse or prompt"
    }

    # The ETW session starts before the driver is loaded, so that DriverEntry's
    # events are in it; every exit path below stops it (finally block).
    Start-WfpMonTrace -Session $session -GuestEtlFile $guestEtl
    $traceStarted = $true
    Write-WfpMonLog "ETW session for provider $($names.EtwProviderName) {$($names.EtwProviderGuid)} started, file $guestEtl"

    Write-WfpMonLog "pnputil /add-driver $guestInf /install"
    # 3010: ERROR_SUCCESS_REBOOT_REQUIRED
    $add = Invoke-WfpMonGuestProcess -Session $session -FilePath 'pnputil.exe' -ArgumentList @('/add-driver', $guestInf, '/install') -ValidExitCode @(0, 3010)
    $packageAdded = $true
    if ($add.ExitCode -eq 3010) { Add-Warning 'pnputil /add-driver asked for a reboot' }
    $published = @(Get-WfpMonPublishedInf -Session $session)
    Assert-Step ($published.Count -eq 1) "expected one published $($names.InfName) in the driver store, found $($published.Count): $($published -join ', ')"
    Write-WfpMonLog "driver package published as $($published[0])"

    $service = Get-WfpMonDriverState -Session $session
    Assert-Step ($null -ne $service) "pnputil did not create service $($names.ServiceName)"
    Assert-Step ($service.PathName -match 'DriverStore\\FileRepository\\') "service image $($service.PathName) is not run from the driver store (DIRID 13)"
    Assert-Step ($service.StartMode -eq 'Manual') "service start mode is $($service.StartMode), expected Manual (demand start)"

    Write-WfpMonLog "sc.exe start $($names.ServiceName)"
    Start-WfpMonDriver -Session $session
    $driverStarts++
    $query = Invoke-WfpMonGuestProcess -Session $session -FilePath 'verifier.exe' -ArgumentList @('/query') -NoThrow
    if ($query.Output -notmatch [regex]::Escape($names.ImageName)) {
        Add-Warning "verifier /query does not list $($names.ImageName): the driver runs without Driver Verifier"
    }

    Write-WfpMonLog 'wfpmonctl install'
    Invoke-WfpMonGuestProcess -Session $session -FilePath $guestCtl -ArgumentList @('install') | Out-Null
    $filtersInstalled = $true
    Invoke-WfpMonGuestProcess -Session $session -FilePath $guestCtl -ArgumentList @('status') | Out-Null

    $state = Get-WfpMonWfpState -Session $session -GuestFile (Join-Path $GuestDirectory 'wfpstate-installed.xml')
    Set-Content -LiteralPath (Join-Path $runDir 'wfpstate-installed.xml') -Value $state -Encoding UTF8
    $objects = Find-WfpMonWfpObject -StateText $state
    Assert-Step ($objects.Missing.Count -eq 0) "netsh wfp show state lacks: $($objects.Missing -join ', ')"
    Write-WfpMonLog "filter engine holds: $($objects.Present -join ', ')"

    # --- traffic is seen and counted -----------------------------------------
    $before = Get-WfpMonCtlJson -Session $session -GuestCtlPath $guestCtl -Command stats
    $tcpBytes = 1048576
    $traffic = @(Invoke-WfpMonLoopbackTraffic -Session $session -TcpBytes $tcpBytes -UdpDatagrams 64 -GuestCtlPath $guestCtl)
    Test-TrafficResult -Result $traffic -When 'with the driver running'
    foreach ($r in $traffic) {
        Assert-Step ($r.FlowsExitCode -eq 0) "wfpmonctl flows --json exited with $($r.FlowsExitCode)"
        Assert-Step ([bool]$r.FlowListed) "wfpmonctl flows --json does not list the open $($r.Family) test connection (port $($r.Port))"
    }
    $after = Get-WfpMonCtlJson -Session $session -GuestCtlPath $guestCtl -Command stats
    $bytesBefore = Measure-WfpMonByteCount -Stats $before
    $bytesAfter = Measure-WfpMonByteCount -Stats $after
    Assert-Step ($null -ne $bytesAfter) 'wfpmonctl stats --json has no byte counters'
    Assert-Step (($bytesAfter - $bytesBefore) -ge $tcpBytes) "byte counters grew by $($bytesAfter - $bytesBefore), expected at least $tcpBytes"
    Write-WfpMonLog "counted bytes grew by $($bytesAfter - $bytesBefore)"

    # --- stop/start under live traffic ---------------------------------------
    Write-WfpMonLog "stopping and starting the driver $Iterations times under traffic"
    Start-WfpMonTrafficJob -Session $session -StopFile $guestStopFile
    Start-Sleep -Seconds 2
    for ($i = 1; $i -le $Iterations; $i++) {
        Stop-WfpMonDriver -Session $session
        $driverStops++
        Start-Sleep -Milliseconds 500
        Start-WfpMonDriver -Session $session
        $driverStarts++
        Start-Sleep -Milliseconds 500
        Write-WfpMonLog "stop/start $i of $Iterations done"
    }
    $loop = Stop-WfpMonTrafficJob -Session $session -StopFile $guestStopFile
    Assert-Step ($loop.Rounds -gt 0) 'the traffic job ran no round'
    Assert-Step ($loop.Failures -eq 0) "$($loop.Failures) of $($loop.Rounds) traffic rounds failed during stop/start: $(@($loop.Errors) -join '; ')"
    Write-WfpMonLog "$($loop.Rounds) traffic rounds, none failed"
    Invoke-WfpMonGuestProcess -Session $session -FilePath $guestCtl -ArgumentList @('status') | Out-Null

    # --- the network still works without the driver --------------------------
    Stop-WfpMonDriver -Session $session
    $driverStops++
    $stopped = @(Invoke-WfpMonLoopbackTraffic -Session $session -TcpBytes 262144 -UdpDatagrams 32)
    Test-TrafficResult -Result $stopped -When 'with the driver stopped and its filters in place'
    Write-WfpMonLog 'traffic flows with the driver stopped (filters permit when the callout is unregistered)'
    Start-WfpMonDriver -Session $session
    $driverStarts++

    # --- no bugcheck ----------------------------------------------------------
    $evidence = @(Get-WfpMonBugCheckEvidence -Session $session -Since $guestStart)
    Assert-Step ($evidence.Count -eq 0) "bugcheck evidence: $($evidence -join '; ')"
    Assert-Step ((Get-WfpMonGuestBootTime -Session $session) -eq $bootAtStart) 'the guest rebooted during the test'

    # --- uninstall ------------------------------------------------------------
    Write-WfpMonLog 'wfpmonctl uninstall'
    Invoke-WfpMonGuestProcess -Session $session -FilePath $guestCtl -ArgumentList @('uninstall') | Out-Null
    $filtersInstalled = $false
    $state = Get-WfpMonWfpState -Session $session -GuestFile (Join-Path $GuestDirectory 'wfpstate-uninstalled.xml')
    Assert-Step (-not ($state -match [regex]::Escape($names.ProviderKey))) 'the wfpmon provider is still in the filter engine after wfpmonctl uninstall'

    Write-WfpMonLog "sc.exe stop $($names.ServiceName)"
    Stop-WfpMonDriver -Session $session
    $driverStops++

    # --- the ETW trace ---------------------------------------------------------
    # The driver is stopped, so its last TeardownComplete is written; stopping the
    # session flushes and closes the .etl.
    Assert-Step (Stop-WfpMonTrace -Session $session) "logman stop $($names.EtwProviderName) ETW session failed"
    $traceStarted = $false
    $etlBytes = Wait-WfpMonTraceFile -Session $session -GuestEtlFile $guestEtl
    Write-WfpMonLog "ETW trace closed: $guestEtl, $etlBytes bytes"
    Copy-Item -FromSession $session -Path $guestEtl -Destination (Join-Path $runDir 'wfpmon.etl')
    $traceXml = Convert-WfpMonTrace -Session $session -GuestEtlFile $guestEtl -GuestXmlFile $guestTraceXml
    Set-Content -LiteralPath (Join-Path $runDir 'wfpmon-trace.xml') -Value $traceXml -Encoding UTF8
    $eventCount = Measure-WfpMonTraceEvent -XmlText $traceXml
    $traceProblems = @(Test-WfpMonTraceCount -Count $eventCount -DriverStarts $driverStarts -DriverStops $driverStops)
    Assert-Step ($traceProblems.Count -eq 0) "ETW trace: $($traceProblems -join '; ') (see wfpmon-trace.xml)"
    $seen = @($eventCount.Keys | Where-Object { $eventCount[$_] -gt 0 } | ForEach-Object { "$_ $($eventCount[$_])" })
    Write-WfpMonLog "ETW trace agrees with $driverStarts starts and $driverStops stops: $($seen -join ', ')"

    foreach ($inf in $published) {
        Write-WfpMonLog "pnputil /delete-driver $inf /uninstall"
        Invoke-WfpMonGuestProcess -Session $session -FilePath 'pnputil.exe' -ArgumentList @('/delete-driver', $inf, '/uninstall') -ValidExitCode @(0, 3010) | Out-Null
    }
    $published = @()
    Assert-Step (@(Get-WfpMonPublishedInf -Session $session).Count -eq 0) "$($names.InfName) is still in the driver store"
    if ($null -ne (Get-WfpMonDriverState -Session $session)) {
        # 1072: ERROR_SERVICE_MARKED_FOR_DELETE (gone once the last handle closes)
        Add-Warning "service $($names.ServiceName) still exists after pnputil /delete-driver /uninstall; removing it with sc.exe delete"
        Invoke-WfpMonGuestProcess -Session $session -FilePath 'sc.exe' -ArgumentList @('delete', $names.ServiceName) -ValidExitCode @(0, 1072) | Out-Null
        if ($null -ne (Get-WfpMonDriverState -Session $session)) {
            Add-Warning "service $($names.ServiceName) still exists after sc.exe delete (marked for deletion while a handle is open)"
        }
    }
    $evidence = @(Get-WfpMonBugCheckEvidence -Session $session -Since $guestStart)
    Assert-Step ($evidence.Count -eq 0) "bugcheck evidence after uninstall: $($evidence -join '; ')"
}
catch {
    $failure = $_.Exception.Message
    Write-WfpMonLog $failure -Level Error
    # A broken session usually means the guest went down: wait for it and look
    # for the bugcheck before giving the verdict.
    if ($null -ne $bootAtStart) {
        try {
            $alive = $null -ne $session -and $session.State -eq 'Opened' -and (Get-WfpMonGuestBootTime -Session $session) -eq $bootAtStart
        }
        catch {
            $alive = $false
        }
        if (-not $alive) {
            Write-WfpMonLog 'the guest session is gone; waiting for the guest to come back' -Level Warn
            try {
                if ($null -ne $session) { Remove-PSSession -Session $session -ErrorAction SilentlyContinue }
                Wait-WfpMonGuest -VMName $VMName -Credential $Credential -PreviousBootTime $bootAtStart -TimeoutSeconds $BootTimeoutSeconds | Out-Null
                $session = New-WfpMonSession -VMName $VMName -Credential $Credential
                $evidence = @(Get-WfpMonBugCheckEvidence -Session $session -Since $guestStart)
                if ($evidence.Count -gt 0) { $failure = "$failure; guest crashed: $($evidence -join '; ')" }
                else { $failure = "$failure; guest rebooted (no bugcheck record found)" }
            }
            catch {
                $failure = "$failure; guest did not come back: $($_.Exception.Message)"
            }
        }
    }
}
finally {
    if ($null -ne $session -and $session.State -eq 'Opened') {
        # Best effort: collect what is left, and undo the install when the VM is kept.
        try {
            if ($traceStarted) {
                # Failure path: keep whatever the trace holds (no verdict on it). After
                # a guest reboot the session is gone and logman stop fails; the file
                # written up to the crash may still be there.
                Stop-WfpMonTrace -Session $session | Out-Null
                $traceStarted = $false
                Copy-Item -FromSession $session -Path $guestEtl -Destination (Join-Path $runDir 'wfpmon.etl') -ErrorAction SilentlyContinue
                try {
                    $traceXml = Convert-WfpMonTrace -Session $session -GuestEtlFile $guestEtl -GuestXmlFile $guestTraceXml
                    Set-Content -LiteralPath (Join-Path $runDir 'wfpmon-trace.xml') -Value $traceXml -Encoding UTF8
                }
                catch {
                    Write-WfpMonLog "ETW trace not converted: $($_.Exception.Message)" -Level Warn
                }
            }
            if ($null -ne $failure -and $null -ne $guestStart) {
                Save-WfpMonMinidump -Session $session -Since $guestStart -Destination $runDir | Out-Null
            }
            if ($NoRevert -and $null -ne $failure) {
                if ($filtersInstalled) {
                    Invoke-WfpMonGuestProcess -Session $session -FilePath $guestCtl -ArgumentList @('uninstall') -NoThrow | Out-Null
                }
                Invoke-WfpMonGuestProcess -Session $session -FilePath 'sc.exe' -ArgumentList @('stop', $names.ServiceName) -NoThrow | Out-Null
                foreach ($inf in $published) {
                    Invoke-WfpMonGuestProcess -Session $session -FilePath 'pnputil.exe' -ArgumentList @('/delete-driver', $inf, '/uninstall', '/force') -NoThrow | Out-Null
                }
                if ($packageAdded) {
                    # The service this run's install created (the precondition was: none).
                    Invoke-WfpMonGuestProcess -Session $session -FilePath 'sc.exe' -ArgumentList @('delete', $names.ServiceName) -NoThrow | Out-Null
                }
            }
        }
        catch {
            Write-WfpMonLog "cleanup: $($_.Exception.Message)" -Level Warn
        }
    }
    if ($null -ne $session) {
        Remove-PSSession -Session $session -ErrorAction SilentlyContinue
    }
    if (-not $NoRevert) {
        try {
            Restore-WfpMonCheckpoint -VMName $VMName -Name $Checkpoint
        }
        catch {
            $message = "revert to checkpoint '$Checkpoint' failed: $($_.Exception.Message)"
            if ($null -eq $failure) { $failure = $message } else { Write-WfpMonLog $message -Level Error }
        }
    }
}

foreach ($w in $warnings) { Write-Output "WARNING: $w" }
Write-Output "results: $runDir"
if ($null -eq $failure) {
    Write-Output 'WFPMON-VM-TEST: PASS'
    exit 0
}
Write-Output "WFPMON-VM-TEST: FAIL: $failure"
exit 1

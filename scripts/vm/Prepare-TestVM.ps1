#Requires -Version 5.1
#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Prepares a Hyper-V guest to test the wfpmon driver: test signing, Driver Verifier
    on wfpmon.sys, crash dumps on; then checkpoints the result.

.DESCRIPTION
    RUNS ONLY ON A WINDOWS HOST WITH HYPER-V (elevated PowerShell, Hyper-V PowerShell
    module). The guest must run Windows 10/11 (or Server 2016+) and is reached over
    PowerShell Direct with -Credential, a local administrator of the guest.

    Steps:
      1. checkpoint '<BaselineCheckpoint>' of the untouched VM (kept if it exists);
      2. in the guest: if BitLocker protects the system drive (a Windows 11 guest
         with a virtual TPM may have turned on device encryption by itself), suspend
         it (Suspend-BitLocker -RebootCount <boots this script causes: 2 with
         -DisableSecureBoot, else 1>), so that the firmware and boot changes below
         do not end in BitLocker recovery; protection resumes by itself afterwards;
      3. generation 2 VMs: Secure Boot must be off for test signing
         (-DisableSecureBoot turns it off; the VM is shut down for that);
      4. in the guest: bcdedit /set testsigning on; verifier /standard /driver wfpmon.sys;
         crash dumps enabled; with -DebugPrintFilter also Debug Print Filter
         DEFAULT = 0xF;
      5. restart the guest and wait for it; check that test signing is active and that
         Driver Verifier lists wfpmon.sys;
      6. checkpoint '<Checkpoint>' (replaced if it exists), the state that
         Invoke-WfpMonVmTest.ps1 reverts to.

    Every wait that gives up says what it waited for, what it saw last and what to
    check next.

    Last line: WFPMON-VM-PREPARE: PASS, or WFPMON-VM-PREPARE: FAIL: <reason>;
    exit code 0 or 1.

.PARAMETER VMName
    Name of the Hyper-V VM.
.PARAMETER Credential
    Guest administrator credential (Get-Credential).
.PARAMETER Checkpoint
    Name of the checkpoint taken after preparation.
.PARAMETER BaselineCheckpoint
    Name of the checkpoint taken before anything is changed.
.PARAMETER DisableSecureBoot
    Turn Secure Boot off on a generation 2 VM (needed for test signing).
.PARAMETER DebugPrintFilter
    Also set the Debug Print Filter DEFAULT mask to 0xF, for a developer who attaches
    a kernel debugger (KDNET) to the guest and runs a debug build: only debug builds
    DbgPrint (lifecycle lines), and Windows filters DbgPrint's default level out
    unless this mask is set. Not needed by Invoke-WfpMonVmTest.ps1, which collects
    the driver's ETW (TraceLogging) events; release builds write no DbgPrint at all.
.PARAMETER BootTimeoutSeconds
    How long to wait for the guest after a start or restart.

.EXAMPLE
    .\Prepare-TestVM.ps1 -VMName wfpmon-test -Credential (Get-Credential) -DisableSecureBoot
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string]$VMName,
    [Parameter(Mandatory)][pscredential]$Credential,
    [string]$Checkpoint = 'wfpmon-prepared',
    [string]$BaselineCheckpoint = 'wfpmon-baseline',
    [switch]$DisableSecureBoot,
    [switch]$DebugPrintFilter,
    [ValidateRange(60, 3600)][int]$BootTimeoutSeconds = 600
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

Import-Module (Join-Path $PSScriptRoot 'WfpMonVm.psm1') -Force

$session = $null
$failure = $null
try {
    Assert-WfpMonHost
    $names = Get-WfpMonConstant
    $vm = Get-WfpMonVm -VMName $VMName

    New-WfpMonCheckpoint -VMName $VMName -Name $BaselineCheckpoint

    $secureBootOff = $false
    if ($vm.Generation -eq 2) {
        $firmware = Get-VMFirmware -VMName $VMName
        if ($firmware.SecureBoot -eq 'On') {
            if (-not $DisableSecureBoot) {
                throw 'Secure Boot is on, so bcdedit cannot enable test signing; rerun with -DisableSecureBoot'
            }
            $secureBootOff = $true
        }
    }
    # Boots this script causes: the restart after bcdedit, and the start after the
    # firmware change. BitLocker stays suspended for exactly these.
    $boots = 1
    if ($secureBootOff) { $boots = 2 }

    Start-WfpMonVm -VMName $VMName
    Wait-WfpMonGuest -VMName $VMName -Credential $Credential -TimeoutSeconds $BootTimeoutSeconds | Out-Null
    $session = New-WfpMonSession -VMName $VMName -Credential $Credential

    $bitLocker = Suspend-WfpMonBitLocker -Session $session -RebootCount $boots
    if ($bitLocker.Suspended) {
        Write-WfpMonLog "BitLocker on the guest's $($bitLocker.Drive) suspended for $boots boots ($($bitLocker.Detail))"
    }
    else {
        Write-WfpMonLog "BitLocker: $($bitLocker.Detail)"
    }
    $bootHint = if ($bitLocker.Suspended) {
        "BitLocker was suspended for $boots boots, so a BitLocker recovery screen is unexpected: enter the recovery key, then check Get-BitLockerVolume in the guest"
    }
    else {
        'a BitLocker recovery screen on the console means BitLocker was on without this script seeing it: enter the recovery key, or revert to the baseline checkpoint, suspend BitLocker in the guest and run this again'
    }

    if ($secureBootOff) {
        Remove-PSSession -Session $session
        $session = $null
        Write-WfpMonLog 'turning Secure Boot off (the VM is shut down for that)'
        Stop-VM -Name $VMName -Force
        Set-VMFirmware -VMName $VMName -EnableSecureBoot Off
        Start-WfpMonVm -VMName $VMName
        Wait-WfpMonGuest -VMName $VMName -Credential $Credential -TimeoutSeconds $BootTimeoutSeconds -NextCheck $bootHint | Out-Null
        $session = New-WfpMonSession -VMName $VMName -Credential $Credential
    }

    Write-WfpMonLog 'bcdedit /set testsigning on'
    Enable-WfpMonTestSigning -Session $session
    Write-WfpMonLog "verifier /standard /driver $($names.ImageName)"
    Enable-WfpMonVerifier -Session $session
    if ($DebugPrintFilter) {
        # Optional: the kit's verdict uses the ETW trace; the filter only serves a
        # kernel debugger reading a debug build's DbgPrint lines.
        Write-WfpMonLog 'Debug Print Filter: DEFAULT = 0xF'
        Enable-WfpMonDebugPrint -Session $session
    }
    Enable-WfpMonCrashDump -Session $session

    $session = Restart-WfpMonGuest -VMName $VMName -Credential $Credential -Session $session -TimeoutSeconds $BootTimeoutSeconds -NextCheck $bootHint

    if (-not (Test-WfpMonTestSigning -Session $session)) {
        throw 'the guest booted without TESTSIGNING (is Secure Boot still on?)'
    }
    Write-WfpMonLog 'test signing is active'
    if (-not (Test-WfpMonVerifierSetting -Session $session)) {
        throw "verifier /querysettings does not list $($names.ImageName)"
    }
    Write-WfpMonLog "Driver Verifier will verify $($names.ImageName)"
    if ($DebugPrintFilter) {
        $mask = Get-WfpMonDebugPrintMask -Session $session
        if ($null -eq $mask -or ($mask -band 0x8) -eq 0) {
            throw "Debug Print Filter DEFAULT is '$mask'; a debug build's DbgPrint output would be filtered out"
        }
    }

    Remove-PSSession -Session $session
    $session = $null
    New-WfpMonCheckpoint -VMName $VMName -Name $Checkpoint -Replace
}
catch {
    $failure = $_.Exception.Message
    Write-WfpMonLog $failure -Level Error
}
finally {
    if ($null -ne $session) {
        Remove-PSSession -Session $session -ErrorAction SilentlyContinue
    }
}

if ($null -eq $failure) {
    Write-Output 'WFPMON-VM-PREPARE: PASS'
    exit 0
}
Write-Output "WFPMON-VM-PREPARE: FAIL: $failure"
exit 1

"""CPU quota and memory limit from cgroup files (v1 and v2), read through a fake file system."""

from __future__ import annotations

from ingestd.workers import cgroup

V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTINFO = (
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
)


def fs(files: dict[str, str]) -> cgroup.Reader:
    return files.get


def test_v2_quota_is_read_from_the_process_cgroup() -> None:
    """cgroup v2: cpu.max "250000 100000" in the process's cgroup is 2.5 CPUs."""
    read = fs(
        {
            "/proc/self/cgroup": "0::/kubepods/pod1/ctr\n",
            "/proc/self/mountinfo": V2_MOUNTINFO,
            "/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "250000 100000\n",
            "/sys/fs/cgroup/kubepods/cpu.max": "max 100000\n",
        }
    )
    assert cgroup.cpu_quota(read) == 2.5
    assert cgroup.auto_workers(read, cpus=64) == 2


def test_the_smallest_limit_on_the_way_to_the_root_wins() -> None:
    """A parent cgroup's lower quota and memory limit bound the child's."""
    read = fs(
        {
            "/proc/self/cgroup": "0::/a/b\n",
            "/proc/self/mountinfo": V2_MOUNTINFO,
            "/sys/fs/cgroup/a/b/cpu.max": "400000 100000",
            "/sys/fs/cgroup/a/cpu.max": "150000 100000",
            "/sys/fs/cgroup/a/b/memory.max": "max",
            "/sys/fs/cgroup/a/memory.max": str(512 * 2**20),
        }
    )
    assert cgroup.cpu_quota(read) == 1.5
    assert cgroup.memory_limit(read) == 512 * 2**20
    assert cgroup.auto_workers(read, cpus=8) == 1


def test_v1_quota_and_memory_limit() -> None:
    """cgroup v1: cfs_quota_us / cfs_period_us, and memory.limit_in_bytes."""
    read = fs(
        {
            "/proc/self/cgroup": "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n",
            "/proc/self/mountinfo": V1_MOUNTINFO,
            "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
            "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": str(2**30),
        }
    )
    assert cgroup.cpu_quota(read) == 3.0
    assert cgroup.memory_limit(read) == 2**30
    assert cgroup.auto_workers(read, cpus=2) == 2  # never more than the CPUs we may run on


def test_no_limits_means_the_usable_cpus() -> None:
    """Unlimited (v1 quota -1, huge memory limit): auto follows the affinity mask."""
    read = fs(
        {
            "/proc/self/cgroup": "4:memory:/\n2:cpu,cpuacct:/\n",
            "/proc/self/mountinfo": V1_MOUNTINFO,
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
        }
    )
    assert cgroup.cpu_quota(read) is None
    assert cgroup.memory_limit(read) is None
    assert cgroup.auto_workers(read, cpus=6) == 6


def test_a_namespaced_cgroup_path_reads_the_mount_point() -> None:
    """Inside a cgroup namespace the path is "/" and the files are at the mount point."""
    read = fs(
        {
            "/proc/self/cgroup": "0::/\n",
            "/proc/self/mountinfo": V2_MOUNTINFO,
            "/sys/fs/cgroup/cpu.max": "50000 100000\n",
        }
    )
    assert cgroup.cpu_quota(read) == 0.5
    assert cgroup.auto_workers(read, cpus=4) == 1  # at least one

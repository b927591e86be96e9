package queue

import "syscall"

// fsFree is the space free to an unprivileged process on the file system
// holding dir, in bytes (statfs(2): f_bavail × f_bsize).
func fsFree(dir string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * st.Bsize, true
}

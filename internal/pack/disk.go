package pack

import (
	"os"
	"path/filepath"
	"syscall"
)

// disk makes files durable, or not with --no-sync.
type disk struct{ noSync bool }

func (d disk) syncFile(f *os.File) error {
	if d.noSync {
		return nil
	}
	return f.Sync()
}

func (d disk) syncDir(dir string) error {
	if d.noSync {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// writeWhole writes dir/name under a temporary name, syncs it, renames it into place and syncs dir.
func (d disk) writeWhole(dir, name string, data []byte, mode os.FileMode) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := d.syncFile(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return d.syncDir(dir)
}

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

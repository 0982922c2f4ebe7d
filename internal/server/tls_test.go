package server

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestUnverified(t *testing.T) {
	for _, c := range []struct {
		dsn  string
		env  []string
		want []string
	}{
		{"host=db1.example sslmode=require", nil, []string{"db1.example"}},
		{"host=db1.example sslmode=verify-full", nil, nil},
		{"host=db1.example", []string{"PGSSLMODE=verify-full"}, nil},
		{"host=db1.example", []string{"PGSSLMODE=verify-ca"}, []string{"db1.example"}},
		{"host=127.0.0.1,::1,localhost,/var/run/postgresql", nil, nil},
		{"", []string{"PGHOST=10.0.0.5"}, []string{"10.0.0.5"}},
		{"postgresql://u@db2:5432,db3/postgres?sslmode=prefer", nil, []string{"db2", "db3"}},
		{"dbname=postgres", nil, nil}, // the default socket
	} {
		for _, k := range []string{"PGSSLMODE", "PGHOST"} {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
		for _, e := range c.env {
			k, v, _ := strings.Cut(e, "=")
			t.Setenv(k, v)
		}
		got := Unverified(c.dsn)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Unverified(%q, %v) = %v, want %v", c.dsn, c.env, got, c.want)
		}
	}
}

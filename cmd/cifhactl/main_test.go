package main

import (
	"reflect"
	"testing"
)

func TestConfigSearch(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	want := []string{"/home/op/.config/cifha/cifhactl.toml", "/etc/cifha/cifhactl.toml", "/etc/cifha/cifha.toml"}
	if got := configSearch(getenv, "/home/op"); !reflect.DeepEqual(got, want) {
		t.Errorf("search %v, want %v", got, want)
	}
	env["CIFHACTL_CONFIG"] = "/srv/ops/cifhactl.toml"
	if got := configSearch(getenv, "/home/op"); !reflect.DeepEqual(got, []string{"/srv/ops/cifhactl.toml"}) {
		t.Errorf("with CIFHACTL_CONFIG: %v", got)
	}
}

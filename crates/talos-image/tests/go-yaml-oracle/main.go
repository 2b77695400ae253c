// go-yaml oracle for talos-image's offline schematic IDs (tests/go_yaml_oracle.rs).
//
// Reads one JSON schematic per line on stdin, unmarshals it into the Image Factory's schematic
// layout (siderolabs/image-factory pkg/schematic: field order and omitempty), re-marshals it the
// way the factory does (gopkg.in/yaml.v3, indent 4) and prints one JSON line
// {"yaml": "...", "id": "<sha256 hex>"} per input. Built with Debian's golang-go and
// golang-gopkg-yaml.v3-dev (GOPATH=/usr/share/gocode, GO111MODULE=off): no network.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"

	"gopkg.in/yaml.v3"
)

type MetaValue struct {
	Key   uint8  `yaml:"key"`
	Value string `yaml:"value"`
}

type Overlay struct {
	Image   string         `yaml:"image,omitempty"`
	Name    string         `yaml:"name,omitempty"`
	Options map[string]any `yaml:"options,omitempty"`
}

type SystemExtensions struct {
	OfficialExtensions []string `yaml:"officialExtensions,omitempty"`
}

type SecureBoot struct {
	IncludeWellKnownCertificates bool `yaml:"includeWellKnownCertificates,omitempty"`
}

type DiskImage struct {
	SectorSize uint `yaml:"sectorSize,omitempty"`
}

type Customization struct {
	ExtraKernelArgs  []string         `yaml:"extraKernelArgs,omitempty"`
	Meta             []MetaValue      `yaml:"meta,omitempty"`
	SystemExtensions SystemExtensions `yaml:"systemExtensions,omitempty"`
	Bootloader       string           `yaml:"bootloader,omitempty"`
	SecureBoot       SecureBoot       `yaml:"secureboot,omitempty"`
	DiskImage        DiskImage        `yaml:"diskImage,omitempty"`
}

type Schematic struct {
	Overlay       Overlay       `yaml:"overlay,omitempty"`
	Customization Customization `yaml:"customization"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for in.Scan() {
		var s Schematic
		// JSON is YAML: decode with yaml.v3 like the factory does.
		if err := yaml.Unmarshal(in.Bytes(), &s); err != nil {
			panic(err)
		}
		var buf bytes.Buffer
		e := yaml.NewEncoder(&buf)
		e.SetIndent(4)
		if err := e.Encode(s); err != nil {
			panic(err)
		}
		sum := sha256.Sum256(buf.Bytes())
		if err := enc.Encode(map[string]string{"yaml": buf.String(), "id": hex.EncodeToString(sum[:])}); err != nil {
			panic(err)
		}
	}
	if err := in.Err(); err != nil {
		panic(err)
	}
}

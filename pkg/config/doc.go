// Package config owns cifha's node configuration: the TOML schema, strict
// decoding (unknown keys and wrong types are errors naming file, line and
// key), defaults, cross-field validation and the reading of secret files.
package config

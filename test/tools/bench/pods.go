package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haagent/haagent/test/framework/await"
	"github.com/haagent/haagent/test/framework/hosts"
	"github.com/haagent/haagent/test/framework/sixhost"
)

// benchPods measures pods on the six-host lab: kubectl create to Running with every
// master up and with master1 halted, and master1's halt to the first create through lb1.
func benchPods(bin string, rounds int) (table, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	l, readyAfter, teardown, err := bootLab(ctx, "pods")
	if err != nil {
		return table{}, err
	}
	defer teardown()

	n := 0
	createToRunning := func() (time.Duration, error) {
		n++
		name := fmt.Sprintf("bench-%d", n)
		manifest := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n", name)
		if err := l.Host(sixhost.Client).WriteFile("/var/tmp/"+name+".yaml", []byte(manifest), 0o644); err != nil {
			return 0, err
		}
		t0 := time.Now()
		if _, err := l.Kubectl(ctx, "create", "-f", "/var/tmp/"+name+".yaml"); err != nil {
			return 0, err
		}
		err := await.Until(ctx, name+" Running", 3*time.Minute, func() error {
			out, err := l.Kubectl(ctx, "get", "pod", name, "-o", "jsonpath={.status.phase}")
			if err != nil || out != "Running" {
				return fmt.Errorf("phase %q %v", out, err)
			}
			return nil
		}, await.Every(250*time.Millisecond))
		return time.Since(t0), err
	}
	// The first pod on each minion pulls nginx through the mirror; warm both up first,
	// so that the rounds compare scheduling and start, not the first pull.
	for range 2 {
		if _, err := createToRunning(); err != nil {
			return table{}, err
		}
	}
	var healthy []time.Duration
	for i := range rounds {
		d, err := createToRunning()
		if err != nil {
			return table{}, err
		}
		progress("pods: healthy round %d: %s", i+1, d.Round(time.Millisecond))
		healthy = append(healthy, d)
	}

	if err := l.Host("master1").Kill(); err != nil {
		return table{}, err
	}
	halted := time.Now()
	firstCreate := time.Duration(0)
	err = await.Until(ctx, "a create through lb1 after master1's halt", 3*time.Minute, func() error {
		n++
		name := fmt.Sprintf("bench-%d", n)
		if _, err := l.Kubectl(ctx, "run", name, "--image=nginx", "--restart=Never"); err != nil {
			return err
		}
		firstCreate = time.Since(halted)
		return nil
	}, await.Every(250*time.Millisecond))
	if err != nil {
		return table{}, err
	}
	progress("pods: first create through lb1 %s after master1's halt", firstCreate.Round(time.Millisecond))
	var degraded []time.Duration
	for i := range rounds {
		d, err := createToRunning()
		if err != nil {
			return table{}, err
		}
		progress("pods: master1 halted, round %d: %s", i+1, d.Round(time.Millisecond))
		degraded = append(degraded, d)
	}
	h, dg := median(healthy), median(degraded)
	return table{
		title:  fmt.Sprintf("Pods on the six-host lab (median of %d pods each; baseline: the same lab with every master up)", rounds),
		header: []string{"measure", "time", "vs healthy"},
		rows: [][]string{
			{"kubectl create → Running, all masters up", ms(h), "1.00×"},
			{"kubectl create → Running, master1 halted", ms(dg), ratio(float64(dg), float64(h))},
			{"master1 halted → first create through lb1 succeeds", ms(firstCreate), ratio(float64(firstCreate), float64(h))},
			{"lab install → both minions Ready (once)", ms(readyAfter), "-"},
		},
		notes: []string{strings.TrimSpace(`Pods use the walkthrough's image: nginx from lb1's registry (a mirror for docker.io);
two pods pulled it on each minion before the rounds. "Running" is the pod's phase as kubectl reads it through lb1, polled every 250 ms.`)},
	}, nil
}

// bootLab builds the .deb, boots the seven-host lab and installs haagent on it; it
// returns the lab, how long the install took to both minions Ready, and the teardown.
func bootLab(ctx context.Context, section string) (*sixhost.Lab, time.Duration, func(), error) {
	work, err := os.MkdirTemp("", "haagent-bench-"+section+"-")
	if err != nil {
		return nil, 0, nil, err
	}
	progress("%s: building the .deb and booting the seven-host lab", section)
	deb, err := sixhost.BuildDeb(ctx, filepath.Join(work, "dist"))
	if err != nil {
		os.RemoveAll(work)
		return nil, 0, nil, err
	}
	cfg := sixhost.DefaultConfig()
	cfg.Deb, cfg.WorkDir, cfg.Logf = deb, work, progress
	hl, err := hosts.NewLabWith(ctx, hosts.LabOptions{Subnet: sixhost.Subnet, Logf: progress})
	if err != nil {
		os.RemoveAll(work)
		return nil, 0, nil, err
	}
	teardown := func() {
		_ = hl.Teardown()
		os.RemoveAll(work)
	}
	l, err := sixhost.Boot(ctx, hl)
	if err != nil {
		teardown()
		return nil, 0, nil, err
	}
	start := time.Now()
	if err := l.Install(ctx, cfg); err != nil {
		teardown()
		return nil, 0, nil, err
	}
	return l, time.Since(start), teardown, nil
}

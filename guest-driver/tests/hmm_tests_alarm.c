/*
 * Linked into the static hmm-tests with -Wl,--wrap=alarm. The kselftest
 * harness gives every test a fixed 30 s alarm, sized for hardware; under
 * TCG with KASAN a loaded host can take longer than that for the large
 * migration tests, so their alarms are stretched instead of failing them.
 */
unsigned int __real_alarm(unsigned int seconds);

unsigned int __wrap_alarm(unsigned int seconds)
{
	return __real_alarm(seconds * 10);
}

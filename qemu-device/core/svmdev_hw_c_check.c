/* Compiled as strict C11 by the build: svmdev_hw.h must stay includable from C. */
#include "svmdev/svmdev_hw.h"

int svmdev_hw_check_cmd_size(void);
int svmdev_hw_check_cmd_size(void)
{
	return (int)sizeof(struct svmdev_cmd);
}
